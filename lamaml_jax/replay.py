"""A reservoir replay buffer as pure functions on fixed-size arrays.

Reservoir sampling (Vitter's Algorithm R): after n items have been offered, each
is held with probability min(1, capacity / n). By default both draws are exact:
item n (0-based) lands in a slot uniform in {0..n}, and replay batches are drawn
without replacement. The official code's two quirks are
options every replay method can set:
- `inclusive_randint=True`: its `random.randint(0, age)` with age = n + 1 draws
  from {0..n+1}, one slot too many, so late items are kept slightly less often;
- `with_replacement=True`: its replay batch draws min(R, size) slots with
  replacement (`selection_scores(..., with_replacement=True)`).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lamaml_jax.types import Batch, PRNGKey


class ReplayBuffer(NamedTuple):
  """Fixed-capacity storage.

  Attributes:
    x: [capacity, *input_shape] stored inputs.
    y: [capacity] int32 labels.
    task: [capacity] int32 task ids.
    size: [] int32 number of filled slots (<= capacity).
    seen: [] int32 number of items offered so far (reservoir's n).
  """
  x: jax.Array
  y: jax.Array
  task: jax.Array
  size: jax.Array
  seen: jax.Array

  @property
  def capacity(self) -> int:
    return self.y.shape[0]


def init(capacity: int, input_shape: tuple[int, ...],
         dtype=jnp.float32) -> ReplayBuffer:
  """An empty buffer holding up to `capacity` samples of `input_shape`."""
  if capacity < 1:
    raise ValueError(f"Replay capacity must be >= 1, got {capacity}.")
  return ReplayBuffer(
      x=jnp.zeros((capacity, *input_shape), dtype),
      y=jnp.zeros((capacity,), jnp.int32),
      task=jnp.zeros((capacity,), jnp.int32),
      size=jnp.zeros((), jnp.int32),
      seen=jnp.zeros((), jnp.int32))


def add(buffer: ReplayBuffer, key: PRNGKey, batch: Batch,
        inclusive_randint: bool = False) -> ReplayBuffer:
  """Offers each sample of `batch`, in order, to the reservoir.

  Samples with weight 0 (padding) are skipped. Item n (0-based count of items
  offered before it) goes to slot n while the buffer is filling, else to a slot
  j ~ U{0..n} kept only if j < capacity. All slots are drawn at once and written
  by one scatter; when two items of the batch draw the same slot the later one
  wins, as with sequential offers. `inclusive_randint`: the official draw
  j ~ U{0..n+1} (module docstring).
  """
  return write(buffer, reservoir_slots(buffer, key, batch.weight, inclusive_randint),
               batch)


def reservoir_slots(buffer: ReplayBuffer, key: PRNGKey, weight: jax.Array,
                    inclusive_randint: bool = False) -> jax.Array:
  """[B] the slot each of B offered items lands in (`add`); `capacity` marks an
  item not kept (padding, rejected, or overwritten by a later item of the batch).
  Depends on the buffer only through `seen`, so it may be drawn ahead of a write."""
  capacity = buffer.capacity
  real = weight > 0
  n = buffer.seen + jnp.cumsum(real.astype(jnp.int32)) - 1  # items offered before each
  draws = jax.random.randint(key, real.shape, 0,
                             jnp.maximum(n + 1 + int(inclusive_randint), 1))
  slot = jnp.where(n < capacity, n, draws)
  keep = real & (slot < capacity)
  order = jnp.arange(real.shape[0])
  overwritten = jnp.any((slot[None, :] == slot[:, None]) & keep[None, :] &
                        (order[None, :] > order[:, None]), axis=1)
  return jnp.where(keep & ~overwritten, slot, capacity)  # out of range: dropped


def write(buffer: ReplayBuffer, slots: jax.Array, batch: Batch,
          offered: jax.Array = True) -> ReplayBuffer:
  """Writes `batch` into `reservoir_slots` by one scatter. With `offered` False
  ([] bool, traced) nothing changes: a push that happens only on some steps of a
  loop, without a `lax.cond` (whose untaken branch copies the whole buffer)."""
  capacity = buffer.capacity
  slots = jnp.where(offered, slots, capacity)
  num_real = _num_offered(batch, offered)
  return ReplayBuffer(
      x=buffer.x.at[slots].set(batch.x.astype(buffer.x.dtype), mode="drop"),
      y=buffer.y.at[slots].set(batch.y, mode="drop"),
      task=buffer.task.at[slots].set(batch.task, mode="drop"),
      size=jnp.minimum(buffer.size + num_real, capacity),
      seen=buffer.seen + num_real)


def _num_offered(batch: Batch, offered) -> jax.Array:
  """[] items a `write` offers: the real (weight > 0) samples, or none."""
  return (jnp.sum(batch.weight > 0, dtype=jnp.int32)  # int32 in x64 mode too
          * jnp.asarray(offered, jnp.int32))


def sample(buffer: ReplayBuffer, key: PRNGKey, num: int,
           with_replacement: bool = False) -> Batch:
  """Draws `num` distinct filled slots uniformly, without replacement (or
  min(num, size) slots with replacement: the official draw).

  While fewer than `num` slots are filled, the missing rows have weight 0 (so a
  weighted loss over the result averages over min(num, size) real samples, as the
  official `getBatch` does).

  Returns:
    Batch with x [num, *input_shape], y, task, weight [num].
  """
  return sample_by_scores(buffer, selection_scores(key, buffer.capacity), num,
                          with_replacement)


def selection_scores(key: PRNGKey, capacity: int) -> jax.Array:
  """[capacity] uniforms: the randomness of one replay draw, apart from the draw,
  so that a caller can draw many at once (one random-bits kernel, not one a draw).
  """
  return jax.random.uniform(key, (capacity,))


def sample_by_scores(buffer: ReplayBuffer, scores: jax.Array, num: int,
                     with_replacement: bool = False) -> Batch:
  """`sample` given `selection_scores`: without replacement the `num` filled slots
  of lowest score; with replacement row i takes slot floor(scores[i] * size)."""
  return _sample_by_scores(buffer, scores, num, with_replacement)[0]


def _sample_by_scores(buffer: ReplayBuffer, scores: jax.Array, num: int,
                      with_replacement: bool = False) -> tuple[Batch, jax.Array]:
  if num > buffer.capacity:
    raise ValueError(f"Cannot sample {num} items from a replay buffer of capacity "
                     f"{buffer.capacity}; lower replay_batch_size or raise the memory size.")
  if with_replacement:
    idx = jnp.minimum((scores[:num] * buffer.size).astype(jnp.int32),
                      jnp.maximum(buffer.size - 1, 0))
  else:
    masked = jnp.where(jnp.arange(buffer.capacity) < buffer.size, scores, 2.0)
    _, idx = jax.lax.top_k(-masked, num)  # the `num` smallest scores
  weight = (jnp.arange(num) < buffer.size).astype(jnp.float32)
  return Batch(x=buffer.x[idx], y=buffer.y[idx], task=buffer.task[idx],
               weight=weight), idx


def sample_after_write(buffer: ReplayBuffer, slots: jax.Array, batch: Batch,
                       offered: jax.Array, scores: jax.Array, num: int,
                       with_replacement: bool = False) -> Batch:
  """`sample_by_scores(write(buffer, slots, batch, offered), scores, num)` without
  writing: rows the write would replace are taken from `batch` instead.

  Lets a loop sample from a buffer that one of its iterations pushes to while the
  buffer itself stays out of the loop carry (XLA copies a carried buffer that is
  both read and scattered into: 2 x 0.6 MB per MNIST glance).
  """
  after = buffer._replace(
      size=jnp.minimum(buffer.size + _num_offered(batch, offered), buffer.capacity))
  out, idx = _sample_by_scores(after, scores, num, with_replacement)
  written = (idx[:, None] == slots[None, :]) & offered                # [num, B]
  row = jnp.argmax(written, axis=1)
  hit = jnp.any(written, axis=1)
  pick = lambda old, new: jnp.where(
      hit.reshape(hit.shape + (1,) * (old.ndim - 1)), new[row].astype(old.dtype), old)
  return out._replace(x=pick(out.x, batch.x), y=pick(out.y, batch.y),
                      task=pick(out.task, batch.task))
