"""Reservoir buffer: probabilities, capacity, sampling."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamaml_jax import replay
from lamaml_jax.types import Batch


def stream(n, start=0):
  ids = jnp.arange(start, start + n)
  return Batch(x=ids[:, None].astype(jnp.float32), y=ids.astype(jnp.int32),
               task=jnp.zeros(n, jnp.int32), weight=jnp.ones(n))


def test_each_item_kept_with_probability_capacity_over_n():
  capacity, n, trials = 5, 40, 4000
  items = stream(n)

  @jax.jit
  @jax.vmap
  def run(key):
    buf = replay.init(capacity, (1,))
    # Offer the stream in batches of 10, as observe does.
    for i, k in enumerate(jax.random.split(key, n // 10)):
      buf = replay.add(buf, k, jax.tree_util.tree_map(lambda a: a[10 * i:10 * i + 10], items))
    return buf

  bufs = run(jax.random.split(jax.random.PRNGKey(0), trials))
  assert int(jnp.max(bufs.size)) == capacity and int(jnp.min(bufs.size)) == capacity
  np.testing.assert_array_equal(bufs.seen, n)
  held = np.zeros(n)
  for row in np.asarray(bufs.y):
    assert len(set(row.tolist())) == capacity  # no duplicates
    held[row] += 1
  freq = held / trials
  p = capacity / n
  tol = 5 * np.sqrt(p * (1 - p) / trials)  # 5 sigma per item
  np.testing.assert_allclose(freq, p, atol=tol)


def test_second_item_replaces_first_half_the_time():
  """Capacity 1, two items: the second is kept with probability 1/2. The official
  `randint(0, age)` off-by-one would keep it with probability 1/3."""
  trials = 4000

  @jax.jit
  @jax.vmap
  def run(key):
    return replay.add(replay.init(1, (1,)), key, stream(2)).y[0]

  kept = np.asarray(run(jax.random.split(jax.random.PRNGKey(3), trials)))
  np.testing.assert_allclose(kept.mean(), 0.5, atol=5 * np.sqrt(0.25 / trials))


def test_filling_is_in_order_and_padding_is_skipped():
  buf = replay.init(4, (1,))
  b = stream(3)._replace(weight=jnp.array([1.0, 0.0, 1.0]))
  buf = replay.add(buf, jax.random.PRNGKey(0), b)
  assert int(buf.size) == 2 and int(buf.seen) == 2
  np.testing.assert_array_equal(buf.y[:2], [0, 2])


def test_sample_without_replacement_and_masks_unfilled():
  buf = replay.add(replay.init(8, (1,)), jax.random.PRNGKey(0), stream(3))
  out = replay.sample(buf, jax.random.PRNGKey(1), 5)
  chex.assert_shape(out.x, (5, 1))
  np.testing.assert_array_equal(out.weight, [1, 1, 1, 0, 0])
  assert sorted(np.asarray(out.y[:3]).tolist()) == [0, 1, 2]
  full = replay.add(replay.init(8, (1,)), jax.random.PRNGKey(0), stream(8))
  counts = np.zeros(8)
  for i in range(2000):
    ys = np.asarray(replay.sample(full, jax.random.PRNGKey(i), 3).y)
    assert len(set(ys.tolist())) == 3
    counts[ys] += 1
  np.testing.assert_allclose(counts / 2000, 3 / 8, atol=5 * np.sqrt(3 / 8 * 5 / 8 / 2000))


def test_sample_larger_than_capacity_raises():
  with pytest.raises(ValueError, match="capacity 4"):
    replay.sample(replay.init(4, (1,)), jax.random.PRNGKey(0), 5)


def test_batch_offer_equals_sequential_offers_with_later_items_winning():
  """Offering a batch equals offering its items one by one in order, for the same
  slot draws: a later item that lands on the slot of an earlier one replaces it."""
  buf = replay.add(replay.init(3, (1,)), jax.random.PRNGKey(0), stream(3))
  for seed in range(30):
    batch = stream(6, start=10)
    got = replay.add(buf, jax.random.PRNGKey(seed), batch)
    # Reproduce the draws: item i has seen 3 + i items before it.
    draws = jax.random.randint(jax.random.PRNGKey(seed), (6,), 0, 3 + np.arange(6) + 1)
    want = list(np.asarray(buf.y))
    for i in range(6):
      j = int(draws[i])
      if j < 3:
        want[j] = 10 + i
    np.testing.assert_array_equal(got.y, want)
    np.testing.assert_array_equal(got.x[:, 0], want)


@pytest.mark.parametrize("filled", [0, 3, 8])
def test_sample_after_write_equals_sampling_the_written_buffer(filled):
  """The glances' view of a buffer pushed to in glance 0, without writing it."""
  buf = replay.init(8, (1,))
  if filled:
    buf = replay.add(buf, jax.random.PRNGKey(0), stream(filled))
  for seed in range(20):
    batch = stream(4, start=100)
    batch = batch._replace(weight=batch.weight.at[1].set(seed % 3 != 0))  # padding
    slots = replay.reservoir_slots(buf, jax.random.PRNGKey(seed), batch.weight)
    scores = replay.selection_scores(jax.random.PRNGKey(1000 + seed), 8)
    for offered in (True, False):
      want = replay.sample_by_scores(replay.write(buf, slots, batch, offered), scores, 5)
      got = replay.sample_after_write(buf, slots, batch, offered, scores, 5)
      chex.assert_trees_all_equal(got, want)
    unchanged = replay.write(buf, slots, batch, offered=False)
    chex.assert_trees_all_equal(unchanged, buf)


def _item_kept_rate(inclusive: bool, capacity=2, n=4, trials=20000):
  """How often item n (0-based) of a stream lands in a full reservoir."""
  buffer = replay.init(capacity, (1,))._replace(
      size=jnp.int32(capacity), seen=jnp.int32(n))
  keys = jax.random.split(jax.random.PRNGKey(0), trials)
  slots = jax.vmap(lambda k: replay.reservoir_slots(
      buffer, k, jnp.ones((1,)), inclusive_randint=inclusive))(keys)
  return float(jnp.mean(slots[:, 0] < capacity))


def test_reservoir_keeps_item_n_with_probability_capacity_over_n_plus_1():
  # Algorithm R: item n is kept with probability capacity / (n + 1); the official
  # randint(0, n + 1) draws one slot too many: capacity / (n + 2).
  sigma = (0.4 * 0.6 / 20000) ** 0.5
  assert abs(_item_kept_rate(False) - 2 / 5) < 4 * sigma
  assert abs(_item_kept_rate(True) - 2 / 6) < 4 * sigma


def test_replay_with_replacement_repeats_slots_and_masks_missing_rows():
  buffer = replay.init(8, (1,))
  buffer = replay.add(buffer, jax.random.PRNGKey(0), Batch(
      x=jnp.arange(5, dtype=jnp.float32)[:, None], y=jnp.arange(5, dtype=jnp.int32),
      task=jnp.zeros(5, jnp.int32), weight=jnp.ones(5)))
  keys = jax.random.split(jax.random.PRNGKey(1), 200)
  draw = lambda wr: jax.vmap(lambda k: replay.sample(buffer, k, 5, with_replacement=wr))(keys)
  distinct = lambda b: np.array([len(set(row)) for row in np.asarray(b.y)])
  without, with_ = draw(False), draw(True)
  assert np.all(distinct(without) == 5)
  # All 5 distinct by chance: 5!/5^5 = 3.8% of draws.
  assert np.mean(distinct(with_) == 5) < 0.15
  assert set(np.asarray(with_.y).ravel()) == set(range(5))
  np.testing.assert_array_equal(with_.weight, 1.0)
  short = jax.vmap(lambda k: replay.sample(buffer, k, 7, with_replacement=True))(keys)
  np.testing.assert_array_equal(short.weight[:, 5:], 0.0)  # min(R, size) real rows
  assert np.asarray(short.y)[:, :5].max() < 5
