"""Task-incremental heads: masking logits to the classes a task owns, and the loss.

CIFAR-100 and TinyImageNet are task-incremental: task t owns the logits
[t * C, (t + 1) * C) with C = classes_per_task; logits outside are masked at train
and test time. MNIST benchmarks are single-head (classes_per_task=None).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from lamaml_jax.types import Batch


def mask_logits(logits: jax.Array, task: jax.Array,
                classes_per_task: Optional[int]) -> jax.Array:
  """Sets logits outside each sample's task range to -inf.

  Args:
    logits: [B, num_outputs].
    task: [B] int task id per sample (or a scalar for the whole batch).
    classes_per_task: logits per task, or None for a single shared head.

  Returns:
    [B, num_outputs] logits; unchanged when classes_per_task is None.
  """
  if classes_per_task is None:
    return logits
  task = jnp.broadcast_to(jnp.asarray(task), logits.shape[:1])
  cls = jnp.arange(logits.shape[-1])
  lo = (task * classes_per_task)[:, None]
  inside = (cls[None, :] >= lo) & (cls[None, :] < lo + classes_per_task)
  return jnp.where(inside, logits, -jnp.inf)


def log_softmax(logits: jax.Array, task: jax.Array,
                classes_per_task: Optional[int]) -> jax.Array:
  """[B, num_outputs] log-probabilities over each sample's own head (-inf
  outside it)."""
  masked = mask_logits(logits, task, classes_per_task)
  return masked - jax.nn.logsumexp(masked, axis=-1, keepdims=True)


def per_sample_cross_entropy(logits: jax.Array, y: jax.Array, task: jax.Array,
                             classes_per_task: Optional[int]) -> jax.Array:
  """[B] −log p(y | x) on each sample's own head."""
  logp = log_softmax(logits, task, classes_per_task)
  return -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]


def cross_entropy(logits: jax.Array, batch: Batch,
                  classes_per_task: Optional[int]) -> jax.Array:
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
