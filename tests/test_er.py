"""ER learner: replay + current batch, reservoir pushes after the glances."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamaml_jax.learners import base, er
from lamaml_jax.types import Batch
from learner_util import (context, finite_after_nan_input, hand_ce, hand_grad, init_swept,
                          jit_once, make_batch, sgd)

NO_CLIP = 1e6


def build(classes_per_task=None, **kw):
  hp = er.ERHparams(**{"lr": 0.1, "grad_clip_norm": NO_CLIP, "replay_batch_size": 5,
                       "memory_size": 6, **kw})
  return er.make(hp, context(classes_per_task))


@pytest.fixture(scope="module")
def shared():
  """One learner (two glances, R = 5 of 20, task-incremental heads) and its observe,
  compiled once for the tests below that need no other hyperparameters."""
  learner = build(classes_per_task=2, glances=2, memory_size=20)
  return learner, jit_once(learner.observe)


def two_steps(params, b: Batch, lr: float):
  for _ in range(2):
    params = sgd(params, hand_grad(params, b, 2), lr)
  return params


def held(memory, rows) -> Batch:
  idx = np.asarray(rows)
  return Batch(x=memory.x[idx], y=memory.y[idx], task=memory.task[idx],
               weight=jnp.ones(len(idx)))


def test_empty_buffer_step_is_sgd_on_the_batch_and_the_batch_is_pushed(shared):
  """Both glances see the empty buffer (the push comes after them); lr is swept to
  0.5 while the hparam says 0.1."""
  learner, observe = shared
  b = make_batch(0, classes_per_task=2)
  s0 = init_swept(learner, b, lr=0.5)
  s1, metrics = observe(s0, b, jnp.int32(0))
  chex.assert_trees_all_close(s1.params, two_steps(s0.params, b, 0.5), atol=1e-6)
  assert float(metrics["replay_loss"]) == 0.0 and bool(metrics["finite"])
  assert int(s1.memory.size) == 4 and int(s1.memory.seen) == 4
  np.testing.assert_array_equal(s1.memory.x[:4], b.x)
  np.testing.assert_array_equal(s1.memory.y[:4], b.y)


def test_loss_averages_over_held_replay_and_batch_rows_only(shared):
  """|M| = 4 < R = 5: each glance replays all 4 held samples; the weight-0 row is out
  of the numerator and the denominator."""
  learner, observe = shared
  first = make_batch(0, task=0, classes_per_task=2)
  second = make_batch(1, task=1, classes_per_task=2)
  s0 = learner.init(jax.random.PRNGKey(1), first)
  s1, _ = observe(s0, first, jnp.int32(0))
  s2, metrics = observe(s1, second, jnp.int32(0))
  replay = held(s1.memory, range(4))
  joined = base.concat_batches(replay, second)
  after_one = sgd(s1.params, hand_grad(s1.params, joined, 2), 0.1)
  np.testing.assert_allclose(metrics["loss"], hand_ce(after_one, joined, 2), rtol=1e-6)
  np.testing.assert_allclose(metrics["replay_loss"], hand_ce(after_one, replay, 2),
                             rtol=1e-6)
  chex.assert_trees_all_close(s2.params, two_steps(s1.params, joined, 0.1), atol=1e-6)


@pytest.mark.parametrize("with_replacement", [False, True])
def test_full_buffer_replays_r_held_samples(with_replacement):
  """|M| = 4, R = 2: the loss is the mean CE over one pair of held samples and the
  batch (a distinct pair without replacement; pairs repeat a sample with it)."""
  learner = build(replay_batch_size=2, memory_size=4,
                  replay_with_replacement=with_replacement)
  observe = jit_once(learner.observe)
  first, second = make_batch(0), make_batch(1)
  s0 = learner.init(jax.random.PRNGKey(1), first)
  s1, _ = observe(s0, first, jnp.int32(0))
  pairs = list(itertools.combinations_with_replacement(range(4), 2))
  candidates = np.array([float(hand_ce(s1.params, base.concat_batches(
      held(s1.memory, pair), second))) for pair in pairs])
  drawn = []
  for seed in range(8):
    s, metrics = observe(s1._replace(key=jax.random.PRNGKey(seed)), second, jnp.int32(1))
    match = np.flatnonzero(np.isclose(candidates, float(metrics["loss"]), rtol=1e-6))
    assert len(match) == 1
    pair = pairs[match[0]]
    grads = hand_grad(s1.params, base.concat_batches(held(s1.memory, pair), second))
    chex.assert_trees_all_close(s.params, sgd(s1.params, grads, 0.1), atol=1e-6)
    drawn.append(pair)
  repeats = [p for p in drawn if p[0] == p[1]]
  assert bool(repeats) == with_replacement, drawn


def test_every_call_pushes_in_every_epoch(shared):
  learner, observe = shared
  batches = [make_batch(seed, task=min(seed, 1), classes_per_task=2) for seed in range(3)]
  state = learner.init(jax.random.PRNGKey(1), batches[0])
  for epoch, b in enumerate(batches):
    state, _ = observe(state, b, jnp.int32(epoch))
  pushed = base.concat_batches(*batches)
  assert int(state.memory.size) == 12 and int(state.memory.seen) == 12
  np.testing.assert_array_equal(state.memory.x[:12], pushed.x)
  np.testing.assert_array_equal(state.memory.y[:12], pushed.y)
  np.testing.assert_array_equal(state.memory.task[:12], pushed.task)
  assert int(state.step) == 6


def test_nan_input_is_not_finite(shared):
  assert not finite_after_nan_input(*shared, make_batch(0, classes_per_task=2))


def test_memory_budget():
  method = er.METHODS["er"]
  assert method.memory_samples(er.ERHparams(memory_size=37), context()) == 37


@pytest.mark.parametrize("kw,field", [
    ({"replay_batch_size": 7, "memory_size": 6}, "replay_batch_size"),
    ({"replay_batch_size": -1}, "replay_batch_size"),
    ({"memory_size": 0, "replay_batch_size": 0}, "memory_size"),
    ({"lr": -1.0}, "lr"), ({"grad_clip_norm": -2.0}, "grad_clip_norm"),
    ({"glances": 0}, "glances")])
def test_invalid_hparams_name_the_field(kw, field):
  with pytest.raises(ValueError, match=field):
    er.ERHparams(**kw)
