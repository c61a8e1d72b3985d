"""A-GEM: the projection on a reference gradient, against numpy closed forms on
gradients of a hand-written loss (helpers shared with test_gem)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamaml_jax.learners import agem
from test_gem import (CLIP, FAST_COMPILE, LR, N_MEM, T, assert_step, context, find_problem,
                      hand_grad, init_state, jit_learner, make_batch, memory_grads)


def build(**overrides):
  """(learner, jitted observe) for AGEMHparams with test defaults and overrides."""
  return jit_learner(agem.make, agem.AGEMHparams(
      **{"lr": LR, "n_memories": N_MEM, "grad_clip_norm": CLIP, **overrides}))


def union_grad(params, rows):
  """∇ of the mean CE over all rows of all tasks in `rows`, each on its own head:
  Σ_k m_k · (mean-CE gradient of task k) / Σ_k m_k."""
  total = sum(len(y) for _, y in rows.values())
  return sum(len(y) * hand_grad(params, x, y, k) for k, (x, y) in rows.items()) / total


def clipped_mean(params, rows):
  return np.mean(memory_grads(params, rows, CLIP), axis=0)


def project(g, g_ref):
  dot = g @ g_ref
  return g - dot / (g_ref @ g_ref) * g_ref if dot < 0 else g


def find(want_conflict, reference=union_grad, **kw):
  """`find_problem` with cos(g, g_ref) < −0.1 (or > 0.1); also returns g_ref."""
  def condition(params, rows, g, _):
    g_ref = reference(params, rows)
    cos = g @ g_ref / np.linalg.norm(g) / np.linalg.norm(g_ref)
    return cos < -0.1 if want_conflict else cos > 0.1
  state, batch, rows, g = find_problem(condition, **kw)
  return state, batch, rows, g, reference(state.params, rows)


def test_non_conflicting_gradient_is_left_untouched():
  state, batch, _, g, _ = find(want_conflict=False)
  assert_step(build()[1], state, batch, g, projected=0)


def test_union_mean_projection_matches_the_closed_form():
  """g_ref = ∇ mean CE over the union of tasks 0 (6 rows) and 1 (3 rows): not the
  mean of the two per-task gradients when the row counts differ."""
  state, batch, rows, g, g_ref = find(want_conflict=True, sizes=(N_MEM, 3))
  expected = project(g, g_ref)
  assert abs(expected @ g_ref) < 1e-12  # on the border of the half-space
  assert np.abs(expected - g).max() * LR > 1e-4  # the projection is visible
  per_task = np.mean(memory_grads(state.params, rows), axis=0)
  assert np.abs(project(g, per_task) - expected).max() * LR > 1e-5  # they differ
  assert_step(build()[1], state, batch, expected, projected=1)


@pytest.mark.parametrize("buckets", [1, 3])
def test_per_task_clipped_mean_projection_matches_the_closed_form(buckets):
  """Official: g_ref = mean over past tasks of their clipped memory gradients
  (read from all three memories, or with 3 buckets from the past two only)."""
  state, batch, rows, g, g_ref = find(want_conflict=True, reference=clipped_mean)
  assert min(np.linalg.norm(memory_grads(state.params, rows), axis=1)) > CLIP
  expected = project(g, g_ref)
  assert np.abs(project(g, union_grad(state.params, rows)) - expected).max() * LR > 1e-5
  assert_step(build(agem_ref="per_task_clipped_mean", past_buckets=buckets)[1], state,
              batch, expected, projected=1)


def test_skip_task0_ignores_task_zero_memory():
  """Official quirk: no projection during task 1; during task 2 only task 1's
  memory makes the reference."""
  state, batch, _, g, g_ref = find(want_conflict=True, past=(0,), current=1,
                                   sizes=(N_MEM,))
  _, observe_skip = build(skip_task0=True)
  assert_step(build()[1], state, batch, project(g, g_ref), projected=1)
  assert_step(observe_skip, state, batch, g, projected=0)

  def task1_only(params, rows):
    return hand_grad(params, *rows[1], 1)
  state, batch, rows, g, g_ref = find(want_conflict=True, reference=task1_only)
  expected = project(g, g_ref)
  assert np.abs(project(g, union_grad(state.params, rows)) - expected).max() * LR > 1e-5
  assert_step(observe_skip, state, batch, expected, projected=1)


def test_future_task_memory_is_ignored():
  """At task 1, task 2's memory opposes g but is not a past task. One sample of
  the batch has weight 1, so that the one row it writes into task 1's memory
  could not outweigh task 2's six if both were wrongly counted as past."""
  def condition(params, rows, g, batch):
    mixed = {**rows, 1: (batch.x[:1], batch.y[:1])}
    return max(g @ union_grad(params, rows), g @ union_grad(params, mixed)) < 0
  state, batch, _, g = find_problem(condition, past=(2,), current=1, sizes=(N_MEM,),
                                    valid=1)
  assert_step(build()[1], state, batch, g, projected=0)


def test_observe_traces_once_across_tasks_and_epochs_and_flags_nan():
  learner, _ = build()
  chex.clear_trace_counter()
  observe = jax.jit(chex.assert_max_traces(learner.observe, n=1),
                    compiler_options=FAST_COMPILE)
  rng = np.random.default_rng(4)
  state = init_state(rng)
  for step, task in enumerate([0, 0, 1, 1, 2, 2]):
    state, metrics = observe(state, make_batch(rng, task), jnp.int32(step % 2))
    assert bool(metrics["finite"])
  np.testing.assert_array_equal(np.asarray(state.memory.valid).sum(1), [N_MEM, N_MEM, N_MEM])
  batch = make_batch(rng, 2)
  _, metrics = observe(state, batch._replace(x=batch.x.at[0, 0].set(jnp.nan)), jnp.int32(0))
  assert not bool(metrics["finite"])


@pytest.mark.parametrize("field,value", [
    ("lr", float("nan")), ("glances", 0), ("n_memories", -1), ("grad_clip_norm", -1.0),
    ("shared_pointer", "no"), ("agem_ref", "mean"), ("skip_task0", None),
    ("past_buckets", -1)])
def test_invalid_hyperparameters_name_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    agem.AGEMHparams(**{field: value})


def test_method_export():
  method = agem.METHODS["agem"]
  hp = method.hparams()
  assert (hp.lr, hp.glances, hp.n_memories, hp.grad_clip_norm, hp.agem_ref,
          hp.skip_task0, hp.shared_pointer) == (0.03, 1, 10, 2.0, "union_mean", False, False)
  assert method.memory_samples(hp, context()) == 10 * T
  assert method.sweepable == ("lr",) and method.step_sizes == ("lr", "grad_clip_norm")
