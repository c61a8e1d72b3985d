"""Online learner: plain SGD on the stream."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamaml_jax.learners import online
from learner_util import (NET, context, finite_after_nan_input, hand_ce, hand_grad,
                          init_swept, jit_once, make_batch, sgd)


def build(classes_per_task=None, **kw):
  return online.make(online.OnlineHparams(**{"lr": 0.1, **kw}), context(classes_per_task))


@pytest.fixture(scope="module")
def default():
  """The learner with lr 0.1 and its observe, compiled once for three tests."""
  learner = build()
  return learner, jit_once(learner.observe)


def test_step_is_sgd_on_cross_entropy(default):
  learner, observe = default
  b = make_batch(0)
  s0 = learner.init(jax.random.PRNGKey(1), b)
  s1, metrics = observe(s0, b, jnp.int32(0))
  grads = hand_grad(s0.params, b)
  chex.assert_trees_all_close(s1.params, sgd(s0.params, grads, 0.1), atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], hand_ce(s0.params, b), rtol=1e-6)
  assert bool(metrics["finite"]) and int(s1.step) == 1


def test_glances_repeat_the_step_on_the_same_batch():
  learner = build(glances=3)
  b = make_batch(0)
  s0 = learner.init(jax.random.PRNGKey(1), b)
  s1, metrics = jax.jit(learner.observe)(s0, b, jnp.int32(0))
  params = s0.params
  for _ in range(3):
    last_loss = hand_ce(params, b)
    params = sgd(params, hand_grad(params, b), 0.1)
  chex.assert_trees_all_close(s1.params, params, atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], last_loss, rtol=1e-5)
  assert int(s1.step) == 3


def test_task_incremental_loss_uses_only_the_samples_own_logits():
  learner = build(classes_per_task=2)
  b = make_batch(0, task=1, classes_per_task=2)  # labels in {2, 3}
  s0 = learner.init(jax.random.PRNGKey(1), b)
  s1, _ = jax.jit(learner.observe)(s0, b, jnp.int32(0))
  grads = hand_grad(s0.params, b, 2)
  chex.assert_trees_all_close(s1.params, sgd(s0.params, grads, 0.1), atol=1e-6)
  out = "Dense_1"  # the output layer: logits 0 and 1 (task 0) are untouched
  np.testing.assert_array_equal(s1.params[out]["bias"][:2], s0.params[out]["bias"][:2])
  np.testing.assert_array_equal(s1.params[out]["kernel"][:, :2],
                                s0.params[out]["kernel"][:, :2])
  assert not np.allclose(s1.params[out]["bias"][2:], s0.params[out]["bias"][2:])


def test_grad_clip_scales_to_the_global_norm():
  learner = build(grad_clip_norm=0.01)
  b = make_batch(0)
  s0 = learner.init(jax.random.PRNGKey(1), b)
  s1, metrics = jax.jit(learner.observe)(s0, b, jnp.int32(0))
  grads = hand_grad(s0.params, b)
  norm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(grads))))
  assert norm > 0.01
  np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-5)
  clipped = jax.tree_util.tree_map(lambda g: g * 0.01 / norm, grads)
  chex.assert_trees_all_close(s1.params, sgd(s0.params, clipped, 0.1), atol=1e-7)


def test_swept_lr_is_traced_and_kept_in_the_state(default):
  learner, observe = default
  b = make_batch(0)
  s0 = init_swept(learner, b, lr=0.5)
  np.testing.assert_allclose(s0.lr, 0.5)
  s1, _ = observe(s0, b, jnp.int32(0))
  grads = hand_grad(s0.params, b)
  chex.assert_trees_all_close(s1.params, sgd(s0.params, grads, 0.5), atol=1e-6)
  with pytest.raises(ValueError, match="glances"):
    learner.init(jax.random.PRNGKey(1), b, glances=2)


@pytest.mark.parametrize("field,value", [("lr", -0.1), ("lr", float("nan")),
                                         ("glances", 0), ("grad_clip_norm", 0.0)])
def test_invalid_hparams_name_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    online.OnlineHparams(**{field: value})


def test_nan_input_is_not_finite(default):
  assert not finite_after_nan_input(*default, make_batch(0))


def test_predict_masks_other_heads():
  learner = build(classes_per_task=2)
  b = make_batch(0, task=1, classes_per_task=2)
  s0 = learner.init(jax.random.PRNGKey(1), b)
  logits = learner.predict(s0, b.x, jnp.int32(1))
  assert np.all(np.isneginf(logits[:, :2]))
  np.testing.assert_allclose(logits[:, 2:], NET.apply({"params": s0.params}, b.x)[:, 2:])
