"""Per-task episodic memories (GEM, A-GEM) as pure functions on fixed arrays.

Task t owns n rows. A write of B samples of task t puts them at rows
[p, min(p + B, n)) of task t's memory, p = the ring pointer, and drops the samples
that do not fit (no wrap); the pointer then advances by the rows written and
returns to 0 when it reaches n (the official GEM/A-GEM `mem_cnt`). With B = n
every write replaces the whole memory of the task.

Pointer: by default every task has its own, starting at 0. `shared_pointer=True`
is the official code's single counter, shared by all tasks and never reset, so a
new task may start writing mid-buffer; its rows below the pointer stay unfilled
until the pointer wraps (the official code reads them uninitialised; here they are
masked by `valid` either way).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lamaml_jax.types import Batch


class EpisodicMemory(NamedTuple):
  """T task memories of n rows each.

  Attributes:
    x: [T, n, *input_shape] stored inputs.
    y: [T, n] int32 labels.
    valid: [T, n] bool, rows written so far (with a shared pointer the filled
      rows of a task need not be a prefix, so a count would not locate them).
    pointer: [T] int32 ring pointer of each task (all equal with a shared pointer).
  """
  x: jax.Array
  y: jax.Array
  valid: jax.Array
  pointer: jax.Array


def init(num_tasks: int, n: int, input_shape: tuple[int, ...],
         dtype=jnp.float32) -> EpisodicMemory:
  """Empty memories of `n` rows for each of `num_tasks` tasks."""
  if num_tasks < 1 or n < 1:
    raise ValueError(f"Episodic memory needs num_tasks >= 1 and n >= 1, got "
                     f"{num_tasks} and {n}.")
  return EpisodicMemory(
      x=jnp.zeros((num_tasks, n, *input_shape), dtype),
      y=jnp.zeros((num_tasks, n), jnp.int32),
      valid=jnp.zeros((num_tasks, n), bool),
      pointer=jnp.zeros((num_tasks,), jnp.int32))


def counts(memory: EpisodicMemory) -> jax.Array:
  """[T] int32 filled rows of each task."""
  return jnp.sum(memory.valid, axis=1, dtype=jnp.int32)


def write(memory: EpisodicMemory, batch: Batch, task: jax.Array,
          shared_pointer: bool = False) -> EpisodicMemory:
  """Writes the samples of `batch` with weight > 0, in order, into task `task`.

  Rows p .. p + m' − 1 receive the first m' = min(m, n − p) of the m kept samples
  (p = pointer); the pointer becomes p + m', or 0 if that equals n.

  Args:
    memory: the memories.
    batch: B samples (x, y; task ids are not read: all go to `task`).
    task: [] int task index.
    shared_pointer: the official single pointer (module docstring).
  """
  n = memory.y.shape[1]
  b = batch.y.shape[0]
  keep = batch.weight > 0
  order = jnp.argsort(~keep, stable=True)  # kept samples first, in stream order
  kept = jnp.sum(keep, dtype=jnp.int32)
  p = memory.pointer[task]
  j = jnp.arange(b)
  rows = jnp.where((j < kept) & (p + j < n), p + j, n)  # n: out of range, dropped
  written = jnp.minimum(kept, n - p)
  new_p = jnp.where(p + written >= n, 0, p + written).astype(jnp.int32)
  if shared_pointer:
    pointer = jnp.full_like(memory.pointer, new_p)
  else:
    pointer = memory.pointer.at[task].set(new_p)
  return EpisodicMemory(
      x=memory.x.at[task, rows].set(batch.x[order].astype(memory.x.dtype), mode="drop"),
      y=memory.y.at[task, rows].set(batch.y[order].astype(jnp.int32), mode="drop"),
      valid=memory.valid.at[task, rows].set(True, mode="drop"),
      pointer=pointer)


def all_tasks(memory: EpisodicMemory) -> Batch:
  """Every task's memory as a `Batch` with a leading task axis: x [T, n, ...],
  y/task [T, n], weight [T, n] (1 on filled rows, 0 elsewhere)."""
  t, n = memory.y.shape
  return Batch(x=memory.x, y=memory.y,
               task=jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32)[:, None], (t, n)),
               weight=memory.valid.astype(jnp.float32))


def first_tasks(memory: EpisodicMemory, r: int) -> EpisodicMemory:
  """The memories of tasks 0..r-1 (r static): every array's first r task rows."""
  return jax.tree_util.tree_map(lambda a: a[:r], memory)


def batch(memory: EpisodicMemory, task: jax.Array) -> Batch:
  """Task `task`'s memory as a `Batch` of n samples (weight 0 on unfilled rows)."""
  return jax.tree_util.tree_map(lambda a: a[task], all_tasks(memory))
