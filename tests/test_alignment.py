"""The gradient-alignment probe (appendix D): its statistics on hand-made
gradients, per-task gradients against closed forms, and the runner's probe."""
import itertools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs
from lamaml_jax import alignment
from lamaml_jax import train
from lamaml_jax.learners.base import Learner


def loop_statistics(g: np.ndarray, t: int) -> dict:
  """The module docstring's means, written as loops over pairs."""
  cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  pairs = list(itertools.combinations(range(t), 2))
  return {"old_cos": np.mean([cos(g[i], g[j]) for i, j in pairs]),
          "old_dot": np.mean([g[i] @ g[j] for i, j in pairs]),
          "new_cos": np.mean([cos(g[i], g[t]) for i in range(t)]),
          "new_dot": np.mean([g[i] @ g[t] for i in range(t)])}


def stats(g, t):
  return {k: float(v) for k, v in alignment.statistics(jnp.asarray(g, jnp.float32),
                                                       jnp.int32(t)).items()}


def test_orthogonal_gradients_have_zero_alignment():
  g = 3.0 * np.eye(5, 6)
  for t in (2, 3, 4):
    assert stats(g, t) == pytest.approx(
        {"old_cos": 0.0, "old_dot": 0.0, "new_cos": 0.0, "new_dot": 0.0}, abs=1e-7)


def test_identical_and_opposite_gradients():
  g = np.array([1.0, -2.0, 2.0])  # |g|^2 = 9
  same = np.stack([g] * 4)
  assert stats(same, 3) == pytest.approx(
      {"old_cos": 1.0, "old_dot": 9.0, "new_cos": 1.0, "new_dot": 9.0}, rel=1e-6)
  # Old tasks g, -g; the arriving one g: one old pair at -1, new pairs +1 and -1.
  opposite = np.stack([g, -g, g])
  assert stats(opposite, 2) == pytest.approx(
      {"old_cos": -1.0, "old_dot": -9.0, "new_cos": 0.0, "new_dot": 0.0}, abs=1e-6)


def test_random_gradients_match_the_pairwise_loops_and_ignore_later_rows():
  rng = np.random.default_rng(0)
  g = rng.normal(size=(7, 11))
  for t in (2, 4, 6):
    garbage = g.copy()
    garbage[t + 1:] = 1e6  # tasks after the arriving one do not count
    assert stats(garbage, t) == pytest.approx(loop_statistics(g, t), rel=1e-4, abs=1e-5)


def test_cosines_are_invariant_to_gradient_scale():
  rng = np.random.default_rng(1)
  g = rng.normal(size=(5, 8))
  scales = np.array([0.01, 3.0, 100.0, 0.5, 7.0])[:, None]
  before, after = stats(g, 4), stats(g * scales, 4)
  assert after["old_cos"] == pytest.approx(before["old_cos"], rel=1e-4)
  assert after["new_cos"] == pytest.approx(before["new_cos"], rel=1e-4)
  assert after["old_dot"] != pytest.approx(before["old_dot"], rel=1e-2)


def linear_learner():
  """loss = Σ w ⊙ mean(x) + Σ b ⊙ mean(task): ∇w = mean of the batch's inputs,
  ∇b = its task id, so each task's gradient is known in closed form."""
  def loss(params, batch):
    return (jnp.sum(params["w"] * jnp.mean(batch.x, 0))
            + jnp.sum(params["b"] * jnp.mean(batch.task.astype(jnp.float32))))
  return Learner(init=None, observe=None, predict=None, loss=loss)


def test_task_gradients_are_each_tasks_own_closed_form():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(4, 6, 3)).astype(np.float32)  # [K, n, features]
  params = {"b": jnp.ones((1,)), "w": jnp.zeros((3,))}
  grads = alignment.task_gradients(linear_learner().loss, params, jnp.asarray(x),
                                   jnp.zeros((4, 6), jnp.int32), lambda a: 2.0 * a)
  chex.assert_shape(grads, (4, 4))
  # Leaves in key order: b, then w; the preprocessing (x2) is applied.
  expected = np.concatenate([np.arange(4.0)[:, None], 2.0 * x.mean(1)], axis=1)
  np.testing.assert_allclose(grads, expected, rtol=1e-5)


def test_members_read_their_own_seeds_probe_data():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)  # [S, K, n, ...]
  y = np.zeros((2, 3, 5), np.int32)
  params = {"b": jnp.zeros((2, 1)), "w": jnp.zeros((2, 4))}  # two members

  for batching in ("map", "vmap"):
    probe = alignment.make_program(linear_learner()._replace(params=lambda s: s),
                                   lambda a: a, batching)
    out = probe(params, x, y, jnp.array([1, 0], jnp.int32), jnp.int32(2))
    for member, seed in enumerate((1, 0)):
      g = np.concatenate([np.zeros((3, 1)), x[seed].mean(1)], axis=1)
      g[:, 0] = np.arange(3)
      want = loop_statistics(g, 2)
      got = {k: float(v[member]) for k, v in out.items()}
      assert got == pytest.approx(want, rel=1e-4, abs=1e-6), batching


def test_a_learner_without_loss_is_refused():
  with pytest.raises(ValueError, match="exposes no `loss`"):
    alignment.make_program(Learner(init=None, observe=None, predict=None), lambda a: a)


def small_config(method="lamaml", **overrides):
  config = configs.get_config(method, "mnist5k_rotations")
  config.num_tasks, config.samples_per_task = 4, 50
  config.probes, config.probe_samples = "alignment", 20
  for k, v in overrides.items():
    setattr(config, k, v)
  return config


@pytest.mark.parametrize("overrides, message", [
    ({"probes": "alignment,curvature"}, "Unknown probe curvature"),
    ({"num_tasks": 2}, "at least 3 tasks"),
    ({"probe_samples": 51}, r"probe_samples must be in \[1, samples_per_task=50\]"),
    ({"probe_samples": 0}, "probe_samples must be"),
])
def test_invalid_probe_settings_are_refused(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    train.run(small_config(**overrides), str(tmp_path))
  assert not os.listdir(tmp_path)


def test_alignment_needs_the_task_stream(tmp_path):
  with pytest.raises(ValueError, match="task-by-task stream"):
    train.run(small_config("iid"), str(tmp_path))


def test_the_runner_reports_alignment_as_each_task_arrives(tmp_path):
  results = train.run(small_config(num_seeds=2), str(tmp_path / "probe"))
  assert results["probe_samples"] == 20
  for member in results["members"]:
    a = member["alignment"]
    assert a["arriving_task"] == [3, 4]
    for name in alignment.NAMES:
      assert len(a[name]) == 2 and all(np.isfinite(a[name]))
      assert all(-1 <= v <= 1 for v in a["old_cos"] + a["new_cos"])
  # The second seed sees other data and weights: other values.
  assert results["members"][0]["alignment"] != results["members"][1]["alignment"]
  with open(tmp_path / "probe" / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f if '"probe"' in line]
  assert [r["task"] for r in records] == [2, 3]  # 0-based, as the log's other records
  np.testing.assert_allclose([r["alignment_per_member"][1][0] for r in records],
                             results["members"][1]["alignment"]["old_cos"])
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(str(tmp_path / "probe" / "tensorboard"))
  events.Reload()
  logged = events.Scalars("alignment/old_cos")
  np.testing.assert_allclose([e.value for e in logged], [r["old_cos"] for r in records],
                             rtol=1e-6)
  # Off by default: no probe, no key, and training is the same.
  plain = train.run(small_config(probes="", num_seeds=2), str(tmp_path / "plain"))
  assert "alignment" not in plain["members"][0] and "probe_samples" not in plain
  assert [m["accuracy_matrix"] for m in plain["members"]] == [
      m["accuracy_matrix"] for m in results["members"]]


def test_an_interrupted_run_reports_each_probe_once_and_as_uninterrupted(
    tmp_path, run_stopped_after_checkpoints):
  """Stopped right after the checkpoint of step 10 (task 2's end: its row and the
  probe of task 3 were written just before it) and of step 13 (mid-task), then
  finished: the same alignment values and one log record per arriving task."""
  config = small_config()
  config.steps_per_program, config.checkpoint_every_minutes = 3, 0.0
  whole = train.run(config, str(tmp_path / "whole"))
  run_stopped_after_checkpoints(config, str(tmp_path / "resumed"), (10, 13))
  resumed = train.run(config, str(tmp_path / "resumed"))
  assert resumed["alignment"] == whole["alignment"]
  assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
  with open(tmp_path / "resumed" / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f if '"probe"' in line]
  assert [r["task"] for r in records] == [2, 3]
