"""EWC learner: Fisher estimators, running-sum penalty, its gradient over tasks."""
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from lamaml_jax.learners import ewc
from lamaml_jax.types import Batch
from learner_util import (context, finite_after_nan_input, flat, hand_ce, hand_grad,
                          init_swept, jit_once, make_batch)

CPT = 2  # task-incremental heads: task t owns logits 2t, 2t + 1


def build(cpt=CPT, **kw):
  hp = ewc.EWCHparams(**{"lr": 0.1, "fisher_chunk_size": 4, **kw})
  return ewc.make(hp, context(cpt))


def one(batch: Batch, j: int) -> Batch:
  return jax.tree_util.tree_map(lambda a: a[j:j + 1], batch)


def hand_fisher(params, data: Batch, estimator: str, n: int, cpt=CPT) -> np.ndarray:
  """Sample by sample in float64: mean of squared per-sample gradients, or the
  square of the gradient of the mean CE over the first n samples."""
  if estimator == "squared_mean_grad":
    first = jax.tree_util.tree_map(lambda a: a[:n], data)
    return flat(hand_grad(params, first, cpt)) ** 2
  return np.mean([flat(hand_grad(params, one(data, j), cpt)) ** 2 for j in range(n)], 0)


@pytest.mark.parametrize("estimator", ewc.FISHERS)
@pytest.mark.parametrize("fisher_samples,n", [(None, 10), (3, 3), (50, 10)])
def test_end_task_adds_the_fisher_and_anchor(estimator, fisher_samples, n):
  """10 samples in chunks of 4 (the last one padded); fisher_samples takes the
  first n (all 10 when it exceeds them). The state is donated: its buffers must be
  distinct (XLA refuses to donate one buffer twice)."""
  learner = build(fisher=estimator, fisher_samples=fisher_samples)
  data = make_batch(7, n=10, task=1, classes_per_task=CPT)
  s0 = learner.init(jax.random.PRNGKey(1), data)
  fisher, theta = hand_fisher(s0.params, data, estimator, n), flat(s0.params)
  if n < 10:  # the option matters
    assert not np.allclose(fisher, hand_fisher(s0.params, data, estimator, 10), rtol=1e-2)
  s1 = jit_once(learner.end_task, donate_argnums=0)(s0, data.x, data.y, jnp.int32(1))
  assert np.any(fisher > 0)
  np.testing.assert_allclose(flat(s1.fisher_sum), fisher, rtol=1e-4, atol=1e-9)
  np.testing.assert_allclose(flat(s1.anchor_sum), fisher * theta, rtol=1e-4, atol=1e-9)
  np.testing.assert_allclose(s1.anchor_sq_sum, np.sum(fisher * theta ** 2), rtol=1e-4)
  assert int(s1.tasks) == 1


def test_penalty_gradient_over_three_tasks():
  """Each step: θ1 = θ0 − lr (∇CE + 2λ Σ_k F_k ⊙ (θ0 − θ*_k)), with F_k and θ*_k
  kept here, task by task (one shared head: 4 logits hold 2 heads of 2, not 3);
  λ comes from the swept init value, not the hparam."""
  lr, lam = 0.1, 5.0
  learner = build(cpt=None, lr=lr, ewc_lambda=1.0)
  observe, end_task = jit_once(learner.observe), jit_once(learner.end_task)
  example = make_batch(0)
  state = init_swept(learner, example, ewc_lambda=lam)
  shapes = jax.tree_util.tree_map(jnp.shape, state)
  _, unravel = jax.flatten_util.ravel_pytree(state.params)
  rng = np.random.default_rng(0)
  fishers, anchors = [], []
  for task in range(3):
    for step in range(2):
      # Away from the anchors, so that every penalty term is felt.
      theta0 = flat(state.params) + rng.normal(scale=0.1, size=flat(state.params).shape)
      state = state._replace(params=unravel(jnp.asarray(theta0, jnp.float32)))
      b = make_batch(10 * task + step, task=task)
      new_state, metrics = observe(state, b, jnp.int32(0))
      assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
      ce_grad = flat(hand_grad(state.params, b))
      pen_grad = sum((2 * lam * f * (theta0 - a) for f, a in zip(fishers, anchors)),
                     np.zeros_like(theta0))
      penalty = sum(np.sum(f * (theta0 - a) ** 2) for f, a in zip(fishers, anchors))
      implied = (theta0 - flat(new_state.params)) / lr - ce_grad
      scale = 1 + np.abs(pen_grad).max()
      np.testing.assert_allclose(implied, pen_grad, atol=1e-4 * scale)
      np.testing.assert_allclose(flat(new_state.params),
                                 theta0 - lr * (ce_grad + pen_grad), atol=1e-5)
      np.testing.assert_allclose(metrics["penalty"], penalty, rtol=1e-4, atol=1e-7)
      np.testing.assert_allclose(metrics["loss"],
                                 hand_ce(state.params, b) + lam * penalty, rtol=1e-4)
      state = new_state
      if task > 0:
        assert np.abs(pen_grad).max() > 1e-2 * np.abs(ce_grad).max()
    data = make_batch(100 + task, n=10, task=task)
    fishers.append(hand_fisher(state.params, data, "mean_per_sample_square", 10, None))
    anchors.append(flat(state.params))
    state = end_task(state, data.x, data.y, jnp.int32(task))
    assert jax.tree_util.tree_map(jnp.shape, state) == shapes  # O(P), not O(T P)
  assert int(state.tasks) == 3 and int(learner.summary(state)["sgd_steps"]) == 6


def test_method_registration():
  method = ewc.METHODS["ewc"]
  assert method.sweepable == ("lr", "ewc_lambda")
  assert method.memory_samples(ewc.EWCHparams(), context()) == 0


@pytest.mark.parametrize("field,value", [
    ("ewc_lambda", -1.0), ("fisher", "diagonal"), ("fisher_samples", 0),
    ("fisher_chunk_size", 0), ("lr", float("inf")), ("glances", 0)])
def test_invalid_hparams_name_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    ewc.EWCHparams(**{field: value})


def test_nan_input_is_not_finite():
  learner = build()
  assert not finite_after_nan_input(learner, jax.jit(learner.observe),
                                    make_batch(0, classes_per_task=CPT))
