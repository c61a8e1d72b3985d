"""The learner protocol and helpers shared by every method.

A learner is three pure functions over an explicit state pytree, in the spirit of
`optax.GradientTransformation`:

  init(key, example_batch) -> state
  observe(state, batch, epoch) -> (state, metrics)    # one incoming stream batch
  predict(state, x, task) -> logits [B, num_outputs]  # masked to the task's head

`batch` is a `Batch` of B samples of one task; `epoch` is the 0-based pass over the
current task (some methods fill their replay buffer only in the first one).
`metrics` always holds 'loss' and 'finite' (False once a NaN/inf appears in the
loss, gradients, weights or learning rates).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lamaml_jax import heads
from lamaml_jax.types import Batch, Metrics, Params, PRNGKey

State = Any


class Learner(NamedTuple):
  init: Callable[[PRNGKey, Batch], State]
  observe: Callable[[State, Batch, jax.Array], tuple[State, Metrics]]
  predict: Callable[[State, jax.Array, jax.Array], jax.Array]


def make_loss(network: nn.Module, classes_per_task: Optional[int]
              ) -> Callable[[Params, Batch], jax.Array]:
  """(params, batch) -> weighted mean cross-entropy on each sample's own head."""
  def loss_fn(params: Params, batch: Batch) -> jax.Array:
    logits = network.apply({"params": params}, batch.x)
    return heads.cross_entropy(logits, batch, classes_per_task)
  return loss_fn


def make_predict(network: nn.Module, classes_per_task: Optional[int]):
  """(state, x, task) -> masked logits, for any state with a `params` field."""
  def predict(state: State, x: jax.Array, task: jax.Array) -> jax.Array:
    logits = network.apply({"params": state.params}, x)
    return heads.mask_logits(logits, task, classes_per_task)
  return predict


def clip_by_global_norm(tree: Params, max_norm: float) -> Params:
  """Scales `tree` so that its global L2 norm is at most `max_norm` (torch's
  `clip_grad_norm_`, up to its 1e-6 epsilon)."""
  clip = optax.clip_by_global_norm(max_norm)
  return clip.update(tree, clip.init(tree))[0]


def all_finite(*trees) -> jax.Array:
  """[] bool: every element of every leaf is finite."""
  leaves = jax.tree_util.tree_leaves(trees)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def tree_select(pred: jax.Array, on_true, on_false):
  """Leafwise `where(pred, on_true, on_false)` for a scalar predicate."""
  return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def concat_batches(*batches: Batch) -> Batch:
  return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *batches)


def check_positive(name: str, value: float, allow_zero: bool = True) -> None:
  """Raises ValueError naming a negative (or zero, if disallowed) hyperparameter."""
  if value is None or value < 0 or (value == 0 and not allow_zero):
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{name} must be {bound}, got {value!r}.")
