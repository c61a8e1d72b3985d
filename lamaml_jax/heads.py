"""Heads: masking logits to the classes a task may use, and the loss.

Task t of a split benchmark (CIFAR-100, TinyImageNet, mnist5k_split) owns the
logits [t·C, (t+1)·C), C = classes_per_task. Two layouts of such benchmarks:
- task-incremental (the paper's): a sample of task t is scored on its own C
  logits, at train and test time;
- class-incremental (`Heads(C, incremental=True)`): one head over every class
  seen so far, [0, (t+1)·C). A training sample of task t is scored on the classes
  of tasks 0..t; at test time the runner asks for the head of the latest task
  trained (`task_program.make_eval_program`), so every task competes with all
  classes seen.
The MNIST streams have one shared head (classes_per_task None).

Every function takes the layout as a `Heads`, or for short as C (an int:
task-incremental) or None (single head).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import jax
import jax.numpy as jnp

from lamaml_jax.types import Batch


@dataclasses.dataclass(frozen=True)
class Heads:
  """classes_per_task: C, or None for one shared head; incremental: the
  class-incremental layout (module docstring)."""
  classes_per_task: Optional[int] = None
  incremental: bool = False

  def __post_init__(self):
    if self.incremental and self.classes_per_task is None:
      raise ValueError("A class-incremental head needs a split benchmark (classes per "
                       "task); the MNIST streams have one shared head.")


Layout = Union[Heads, int, None]


def as_heads(layout: Layout) -> Heads:
  return layout if isinstance(layout, Heads) else Heads(layout)


def mask_logits(logits: jax.Array, task: jax.Array, layout: Layout) -> jax.Array:
  """Sets logits outside the classes each sample's task may use to -inf.

  Args:
    logits: [B, num_outputs].
    task: [B] int task id per sample (or a scalar for the whole batch).
    layout: `Heads`, C or None (module docstring).

  Returns:
    [B, num_outputs] logits; unchanged for a single head.
  """
  layout = as_heads(layout)
  c = layout.classes_per_task
  if c is None:
    return logits
  task = jnp.broadcast_to(jnp.asarray(task), logits.shape[:1])
  cls = jnp.arange(logits.shape[-1])[None, :]
  hi = ((task + 1) * c)[:, None]
  inside = cls < hi if layout.incremental else (cls >= hi - c) & (cls < hi)
  return jnp.where(inside, logits, -jnp.inf)


def log_softmax(logits: jax.Array, task: jax.Array, classes_per_task: Layout
                ) -> jax.Array:
  """[B, num_outputs] log-probabilities over each sample's own head (-inf
  outside it)."""
  masked = mask_logits(logits, task, classes_per_task)
  return masked - jax.nn.logsumexp(masked, axis=-1, keepdims=True)


def per_sample_cross_entropy(logits: jax.Array, y: jax.Array, task: jax.Array,
                             classes_per_task: Layout) -> jax.Array:
  """[B] −log p(y | x) on each sample's own head."""
  logp = log_softmax(logits, task, classes_per_task)
  return -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]


def cross_entropy(logits: jax.Array, batch: Batch, classes_per_task: Layout
                  ) -> jax.Array:
  """Weighted mean cross-entropy, each sample scored on its own task's head.

  Equals the official code's slice-then-CE (`take_multitask_loss`): masking with
  -inf removes the other logits from the softmax exactly.

  Args:
    logits: [B, num_outputs] unmasked network outputs.
    batch: the samples (uses y, task, weight).
    classes_per_task: see `mask_logits`.

  Returns:
    scalar sum_i w_i CE_i / max(sum_i w_i, tiny).
  """
  per_sample = per_sample_cross_entropy(logits, batch.y, batch.task, classes_per_task)
  w = batch.weight.astype(per_sample.dtype)
  return jnp.sum(w * per_sample) / jnp.maximum(jnp.sum(w), 1e-12)
