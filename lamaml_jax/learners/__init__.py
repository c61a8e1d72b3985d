"""Learners by method name: `make_learner(method, hparams, network, classes_per_task)`."""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import flax.linen as nn

from lamaml_jax.learners import lamaml
from lamaml_jax.learners.base import Learner

# method name -> (hyperparameter dataclass, factory(hparams, network, classes_per_task),
#                 names of the scalars `init` accepts for grids).
LEARNER_FAMILIES = {name: (lamaml.LaMAMLHparams, lamaml.make, lamaml.SWEEPABLE)
                    for name in lamaml.METHODS}
METHODS = tuple(LEARNER_FAMILIES)


def sweepable(method: str) -> tuple[str, ...]:
  """Hyperparameters of `method` that a grid may vary inside one program."""
  return LEARNER_FAMILIES[method][2] if method in LEARNER_FAMILIES else ()


def make_learner(method: str, hparams: Mapping, network: nn.Module,
                 classes_per_task: Optional[int]) -> Learner:
  """Builds learner `method` from a mapping of its hyperparameters.

  Raises:
    ValueError: unknown method, unknown hyperparameter name or invalid value.
  """
  if method not in LEARNER_FAMILIES:
    raise ValueError(f"Unknown method {method!r}; valid methods: {', '.join(METHODS)}.")
  hparams_cls, factory, _ = LEARNER_FAMILIES[method]
  known = {f.name for f in dataclasses.fields(hparams_cls)}
  unknown = sorted(set(hparams) - known)
  if unknown:
    raise ValueError(f"Unknown hyperparameters for {method}: {', '.join(unknown)}; "
                     f"valid: {', '.join(sorted(known))}.")
  return factory(hparams_cls(**hparams), network, classes_per_task)
