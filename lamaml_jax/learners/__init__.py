"""Methods by name: `METHODS`, `make_learner(method, hparams, context)`.

Each learner module exports `METHODS`, a dict name -> `base.Method`; adding a
method is one module in this package and one line below.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from lamaml_jax.learners import agem
from lamaml_jax.learners import er
from lamaml_jax.learners import ewc
from lamaml_jax.learners import gem
from lamaml_jax.learners import icarl
from lamaml_jax.learners import iid
from lamaml_jax.learners import lamaml
from lamaml_jax.learners import mer
from lamaml_jax.learners import meta_bgd
from lamaml_jax.learners import online
from lamaml_jax.learners.base import BuildContext, Learner, Method

REGISTRY: dict[str, Method] = {
    **lamaml.METHODS, **online.METHODS, **er.METHODS, **ewc.METHODS, **gem.METHODS,
    **agem.METHODS, **iid.METHODS, **icarl.METHODS, **mer.METHODS, **meta_bgd.METHODS,
}
METHODS = tuple(REGISTRY)


def method(name: str) -> Method:
  """The registered `Method` called `name`.

  Raises:
    ValueError: unknown name (the message lists the valid ones).
  """
  if name not in REGISTRY:
    raise ValueError(f"Unknown method {name!r}; valid methods: {', '.join(METHODS)}.")
  return REGISTRY[name]


def sweepable(name: str) -> tuple[str, ...]:
  """Hyperparameters of method `name` that a grid may vary inside one program."""
  return REGISTRY[name].sweepable if name in REGISTRY else ()


def make_hparams(name: str, hparams: Mapping):
  """The hyperparameter dataclass of `name` from a mapping (e.g. config.learner).

  Raises:
    ValueError: unknown method, unknown hyperparameter name or invalid value.
  """
  spec = method(name)
  known = {f.name for f in dataclasses.fields(spec.hparams)}
  unknown = sorted(set(hparams) - known)
  if unknown:
    raise ValueError(f"Unknown hyperparameters for {name}: {', '.join(unknown)}; "
                     f"valid: {', '.join(sorted(known))}.")
  return spec.hparams(**hparams)


def make_learner(name: str, hparams: Mapping, context: BuildContext) -> Learner:
  """Builds method `name` for the run described by `context` (pure functions)."""
  return method(name).make(make_hparams(name, hparams), context)
