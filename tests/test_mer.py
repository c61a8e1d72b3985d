"""MER learner: sequential single-sample SGD steps, Reptile interpolations, reservoir
pushes per example (checked against hand-written loops and a NumPy linear model)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamaml_jax import networks
from lamaml_jax import replay as replay_lib
from lamaml_jax.learners import base, mer
from lamaml_jax.types import Batch
from learner_util import (context, finite_after_nan_input, hand_grad, init_swept,
                          jit_once, make_batch, sgd)

NO_CLIP = None


def build(classes_per_task=None, network=None, **kw):
  hp = mer.MERHparams(**{"lr": 0.1, "grad_clip_norm": NO_CLIP, "replay_batch_size": 3,
                         "memory_size": 6, "batches_per_example": 1, "beta": 1.0,
                         "gamma": 1.0, **kw})
  ctx = context(classes_per_task)
  if network is not None:
    ctx = base.BuildContext(**{**ctx.__dict__, "network": network})
  return mer.make(hp, ctx)


def row(b: Batch, i: int) -> Batch:
  return jax.tree_util.tree_map(lambda a: a[i:i + 1], b)


def test_s1_r0_beta_gamma_1_is_plain_sgd_one_example_at_a_time():
  """R = 0: each example of the batch takes exactly one SGD step, in order."""
  learner = build(replay_batch_size=0)
  b = make_batch(0, n=3)
  s0 = init_swept(learner, b, lr=0.5)
  s1, metrics = jax.jit(learner.observe)(s0, b, jnp.int32(0))
  params = s0.params
  for i in range(3):
    params = sgd(params, hand_grad(params, row(b, i)), 0.5)
  chex.assert_trees_all_close(s1.params, params, atol=1e-6)
  assert int(s1.step) == 3 and int(s1.memory.size) == 3 and bool(metrics["finite"])


def test_empty_replay_rows_are_no_ops_and_later_examples_replay_earlier_ones():
  """R = 3 but the buffer starts empty: example 0 takes one step; example 1 takes
  its own step and then replays example 0 (pushed before it), the only held
  sample, once: min(R, |M|) draws, with or without replacement (the official
  `getBatch`)."""
  for with_replacement in (True, False):
    replays = 1
    learner = build(classes_per_task=2, replay_with_replacement=with_replacement)
    b = make_batch(1, n=2, task=1, classes_per_task=2)
    b = b._replace(task=jnp.array([0, 1], jnp.int32),
                   y=jnp.array([1, 3], jnp.int32))  # example 0 on task 0's head
    s0 = learner.init(jax.random.PRNGKey(0), b)
    s1, _ = jax.jit(learner.observe)(s0, b, jnp.int32(0))
    p = sgd(s0.params, hand_grad(s0.params, row(b, 0), 2), 0.1)
    p = sgd(p, hand_grad(p, row(b, 1), 2), 0.1)
    for _ in range(replays):
      p = sgd(p, hand_grad(p, row(b, 0), 2), 0.1)
    chex.assert_trees_all_close(s1.params, p, atol=1e-6)
    assert int(s1.step) == 2 + replays


def softmax_ce_grad(w, bias, x, y):
  """NumPy gradient of CE(softmax(x W + b), y) for one sample (linear model)."""
  z = x @ w + bias
  p = np.exp(z - z.max())
  p /= p.sum()
  p[y] -= 1.0
  return np.outer(x, p), p


@pytest.mark.parametrize("beta,gamma", [(0.3, 1.0), (0.3, 0.5), (1.0, 0.25)])
def test_reptile_interpolations_equal_a_numpy_linear_model(beta, gamma):
  """S = 2 rounds of [example, the one held sample] on a linear model; the hand
  computation: θ_B + β (θ_after_round − θ_B) per round, then θ_A + γ (θ − θ_A)."""
  linear = networks.MLP(hidden=(), num_outputs=4)
  learner = build(network=linear, replay_batch_size=1, memory_size=1,
                  batches_per_example=2, beta=beta, gamma=gamma, lr=0.2)
  b = make_batch(2, n=1)
  s0 = learner.init(jax.random.PRNGKey(3), b)
  held = make_batch(3, n=1)
  memory = replay_lib.write(s0.memory, jnp.array([0]), held)
  s0 = s0._replace(memory=memory)
  s1, _ = jax.jit(learner.observe)(s0, b, jnp.int32(0))

  w = np.asarray(s0.params["Dense_0"]["kernel"], np.float64)
  bias = np.asarray(s0.params["Dense_0"]["bias"], np.float64)
  samples = [(np.asarray(b.x[0], np.float64), int(b.y[0])),
             (np.asarray(held.x[0], np.float64), int(held.y[0]))]
  w_a, b_a = w.copy(), bias.copy()
  for _ in range(2):
    w_b, b_b = w.copy(), bias.copy()
    for x, y in samples:
      gw, gb = softmax_ce_grad(w, bias, x, y)
      w, bias = w - 0.2 * gw, bias - 0.2 * gb
    w, bias = w_b + beta * (w - w_b), b_b + beta * (bias - b_b)
  w, bias = w_a + gamma * (w - w_a), b_a + gamma * (bias - b_a)
  np.testing.assert_allclose(s1.params["Dense_0"]["kernel"], w, atol=1e-6)
  np.testing.assert_allclose(s1.params["Dense_0"]["bias"], bias, atol=1e-6)
  assert int(s1.memory.seen) == 2


def test_each_step_is_clipped():
  """A clip far below the gradient norm: every step moves θ by lr · clip exactly."""
  learner = build(replay_batch_size=0, grad_clip_norm=1e-3)
  b = make_batch(4, n=1)
  s0 = learner.init(jax.random.PRNGKey(0), b)
  s1, _ = jax.jit(learner.observe)(s0, b, jnp.int32(0))
  moved = jax.tree_util.tree_map(jnp.subtract, s1.params, s0.params)
  np.testing.assert_allclose(float(jnp.sqrt(sum(jnp.sum(d ** 2) for d in
                                                jax.tree_util.tree_leaves(moved)))),
                             0.1 * 1e-3, rtol=2e-3)  # float32 θ


def test_padding_examples_change_nothing():
  learner = build()
  b = make_batch(5, n=2)
  s0 = learner.init(jax.random.PRNGKey(0), b)
  s1, _ = jax.jit(learner.observe)(s0, b._replace(weight=jnp.zeros(2)), jnp.int32(0))
  chex.assert_trees_all_close(s1.params, s0.params)
  assert int(s1.memory.seen) == 0 and int(s1.step) == 0


def test_observe_is_traced_once_and_flags_nan():
  learner = build(classes_per_task=2, batches_per_example=2, beta=0.5)
  observe = jit_once(learner.observe)
  state = learner.init(jax.random.PRNGKey(0), make_batch(0, classes_per_task=2))
  for seed, task in ((0, 0), (1, 0), (2, 1)):
    state, metrics = observe(state, make_batch(seed, task=task, classes_per_task=2),
                             jnp.int32(0))
    assert bool(metrics["finite"])
  assert set(metrics) == {"loss", "example_loss", "grad_norm", "finite"}
  assert int(state.memory.size) == 6 and int(state.step) > 0
  assert not finite_after_nan_input(learner, observe, make_batch(0, classes_per_task=2))


@pytest.mark.parametrize("field,value", [
    ("lr", -0.1), ("beta", float("nan")), ("gamma", float("inf")),
    ("batches_per_example", 0), ("replay_batch_size", 7), ("memory_size", 0),
    ("grad_clip_norm", 0.0)])
def test_invalid_hyperparameters_are_refused(field, value):
  with pytest.raises(ValueError, match=field):
    mer.MERHparams(**{field: value, **({"memory_size": 6} if field ==
                                      "replay_batch_size" else {})})
