"""A-GEM (Chaudhry et al., 2019) as in the official La-MAML code (`agem.py`).

GEM's memory, glances, clipped gradient g and SGD step (`gem.make_episodic`); its
step 3 becomes one projection on a reference gradient g_ref of the past tasks:

  if g·g_ref < 0:  g ← g − (g·g_ref / g_ref·g_ref) g_ref      (else g unchanged)

g_ref (`agem_ref`), over the past tasks k < t with a filled memory row:
  'union_mean': ∇θ of the mean CE over the union of their filled rows, each on its
    own task's head, unclipped (A-GEM's paper);
  'per_task_clipped_mean': mean over k of clip(∇θ CE(memory[k])) (official).
`skip_task0`: the official code never registers task 0, so task 0's memory is never
used (and nothing is projected during task 1). The official code's second,
never-read reservoir is left out.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from lamaml_jax import episodic_memory
from lamaml_jax.learners import base
from lamaml_jax.learners import gem

_HIGHEST = jax.lax.Precision.HIGHEST
REFERENCES = ("union_mean", "per_task_clipped_mean")


@dataclasses.dataclass(frozen=True)
class AGEMHparams(gem.EpisodicHparams):
  """`gem.EpisodicHparams` and:

  Attributes:
    agem_ref: the reference gradient (module docstring).
    skip_task0: never use task 0's memory (official quirk).
  """
  agem_ref: Literal["union_mean", "per_task_clipped_mean"] = "union_mean"
  skip_task0: bool = False

  def __post_init__(self):
    super().__post_init__()
    if self.agem_ref not in REFERENCES:
      raise ValueError(f"agem_ref must be one of {REFERENCES}, got {self.agem_ref!r}.")
    gem.check_bool("skip_task0", self.skip_task0)


def agem_projection(g: jax.Array, g_ref: jax.Array) -> tuple[jax.Array, dict]:
  """g [P], g_ref [P] -> (g − min(g·g_ref, 0) / ‖g_ref‖² g_ref, {'projected': 0/1})."""
  dot = jnp.dot(g, g_ref, precision=_HIGHEST)
  norm2 = jnp.dot(g_ref, g_ref, precision=_HIGHEST)
  conflict = dot < 0
  scale = jnp.where(conflict, dot / jnp.where(conflict, norm2, 1.0), 0.0)
  return g - scale * g_ref, {"projected": conflict.astype(jnp.float32)}


def make(hp: AGEMHparams, context: base.BuildContext) -> base.Learner:
  """Builds A-GEM (pure functions; the runner compiles them)."""
  first = 1 if hp.skip_task0 else 0
  impl = gem.memory_gradients_impl(hp, context)

  def reference(memory_loss, params, memory, past):
    if hp.agem_ref == "per_task_clipped_mean":
      G = gem.task_gradients(memory_loss, params, memory, hp.grad_clip_norm, past,
                             impl)
      weights = past.astype(G.dtype) / jnp.maximum(jnp.sum(past), 1)
      # A dot over the task axis, not where + sum: XLA:CPU ran that reduction of
      # the vmapped gradients 3x slower than the whole of GEM's step.
      return jnp.dot(weights, G, precision=_HIGHEST)
    rows = episodic_memory.all_tasks(memory)
    rows = rows._replace(weight=rows.weight * past[:, None])
    union = jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[2:]), rows)
    return ravel_pytree(jax.grad(memory_loss)(params, union))[0]

  def correct(memory_loss, params, memory, task, g):
    g_ref = reference(memory_loss, params, memory, gem.past_tasks(memory, task, first))
    return agem_projection(g, g_ref)

  return gem.make_episodic(hp, context, correct)


METHODS = {"agem": base.Method(hparams=AGEMHparams, make=make, sweepable=gem.SWEEPABLE,
                               step_sizes=("lr", "grad_clip_norm"),
                               memory_samples=gem.memory_samples)}
