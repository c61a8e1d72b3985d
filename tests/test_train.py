"""End-to-end runs of the runner on the embedded mnist5k benchmark."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import configs
from lamaml_jax import io_utils
from lamaml_jax import task_program
from lamaml_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(method="lamaml", tasks=3, samples=200, **learner):
  config = configs.get_config(method, "mnist5k_rotations")
  config.num_tasks = tasks
  config.samples_per_task = samples
  config.learner.glances = 2
  for k, v in learner.items():
    config.learner[k] = v
  return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  results = train.run(small_config(), workdir)
  return workdir, results


def test_run_writes_all_outputs(finished_run):
  workdir, results = finished_run
  for name in ("config.json", "results.json", "metrics.jsonl", "accuracy_matrix.png",
               "task_accuracies.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  assert os.listdir(os.path.join(workdir, "checkpoints"))
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  for key in ("method", "dataset", "setting", "seed", "accuracy_matrix", "ra", "bti",
              "bti_official", "la", "fwt", "forgetting", "wall_time_s", "meta_updates",
              "versions", "git_commit", "config_hash", "stream", "stream_steps"):
    assert key in saved, key
  assert saved["memory_samples"] == 200 and saved["stream"] == "tasks"
  assert saved["stream_steps"] == 60 and len(saved["config_hash"]) == 16
  assert saved["status"] == "complete" and saved["tasks_completed"] == 3
  # 3 tasks x 20 batches x 2 glances.
  assert saved["meta_updates"] == 120
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert sum("eval_accuracy" in r for r in records) == 3


def test_metrics_recomputed_from_the_saved_matrix(finished_run):
  workdir, _ = finished_run
  with open(os.path.join(workdir, "results.json")) as f:
    r = json.load(f)
  acc, b = np.array(r["accuracy_matrix"]), np.array(r["untrained_accuracy"])
  assert acc.shape == (3, 3)
  # Own arithmetic, term by term.
  ra = (acc[2, 0] + acc[2, 1] + acc[2, 2]) / 3
  bti = ((acc[2, 0] - acc[0, 0]) + (acc[2, 1] - acc[1, 1])) / 2
  la = (acc[0, 0] + acc[1, 1] + acc[2, 2]) / 3
  fwt = ((acc[0, 1] - b[1]) + (acc[1, 2] - b[2])) / 2
  np.testing.assert_allclose([r["ra"], r["bti"], r["bti_official"], r["la"], r["fwt"]],
                             [ra, bti, bti * 2 / 3, la, fwt], atol=1e-12)
  # Learning happened: each task is well above chance (0.1) right after training on it.
  assert min(acc[0, 0], acc[1, 1], acc[2, 2]) > 0.25


def test_accuracies_are_exact_fractions_of_the_test_set(finished_run):
  workdir, _ = finished_run
  with open(os.path.join(workdir, "results.json")) as f:
    acc = np.array(json.load(f)["accuracy_matrix"])
  np.testing.assert_allclose(acc * 1000, np.round(acc * 1000), atol=1e-9)


def test_program_chunking_does_not_change_results(finished_run, tmp_path):
  _, whole = finished_run
  config = small_config()
  config.steps_per_program = 6  # 20 steps per task -> programs of 6, 6, 6, 2
  chunked = train.run(config, str(tmp_path))
  np.testing.assert_array_equal(chunked["accuracy_matrix"], whole["accuracy_matrix"])


def test_automatic_programs_stay_within_the_time_bound(finished_run, tmp_path):
  """A bound below one step's time: every program is one step (a record each),
  from one executable, and the results are those of whole-task programs."""
  _, whole = finished_run
  config = small_config()
  config.max_program_seconds = 1e-6
  bounded = train.run(config, str(tmp_path))
  np.testing.assert_array_equal(bounded["accuracy_matrix"], whole["accuracy_matrix"])
  steps = [r["global_step"] for r in io_utils.read_jsonl(tmp_path / "metrics.jsonl")
           if "loss" in r]
  assert steps == list(range(1, 61))


def test_workdir_with_another_config_is_refused(finished_run, tmp_path):
  workdir, _ = finished_run
  config = small_config()
  config.seed = 1
  config.learner.alpha_init = 0.25
  with pytest.raises(train.WorkdirConflictError) as e:
    train.run(config, workdir)
  # Each differing field by its full name, with both values.
  assert ("learner.alpha_init: 0.15 in the workdir vs 0.25 now; seed: 0 in the "
          "workdir vs 1 now" in str(e.value)), str(e.value)
  assert "--overwrite" in str(e.value)


def test_nothing_is_written_before_the_config_and_data_are_valid(tmp_path):
  """An invalid hyperparameter (or unavailable data) stops the run before the
  workdir exists; a file in the way of the workdir is one clear error."""
  config = small_config()
  config.learner.alpha_init = -1.0
  with pytest.raises(ValueError, match="alpha_init"):
    train.run(config, str(tmp_path / "new"))
  assert not (tmp_path / "new").exists()
  (tmp_path / "file").write_text("")
  with pytest.raises(train.WorkdirConflictError, match="not a directory"):
    train.run(small_config(), str(tmp_path / "file"))


def test_resuming_with_other_execution_settings_is_allowed(finished_run, tmp_path,
                                                           monkeypatch):
  """A run interrupted in task 1 resumes with other program lengths and
  checkpoint interval, and ends as the uninterrupted run."""
  _, whole = finished_run
  config = small_config()
  config.steps_per_program, config.checkpoint_every_minutes = 5, 0.0
  calls, original = [], task_program.CompiledAhead.executable

  def interrupted(self, *args, **kwargs):
    calls.append(None)
    if len(calls) == 7:  # the third program of task 1 (4 programs a task)
      raise KeyboardInterrupt
    return original(self, *args, **kwargs)

  monkeypatch.setattr(task_program.CompiledAhead, "executable", interrupted)
  with pytest.raises(KeyboardInterrupt):
    train.run(config, str(tmp_path))
  monkeypatch.undo()
  assert max(_checkpoint_steps(str(tmp_path))) == 30  # task 1, step 10
  config.steps_per_program, config.checkpoint_every_minutes = 7, 1.0
  again = train.run(config, str(tmp_path))
  assert again["accuracy_matrix"] == whole["accuracy_matrix"]
  assert again["meta_updates"] == whole["meta_updates"]
  assert again["config_hash"] == whole["config_hash"]  # execution settings differ


def test_divergence_stops_with_incomplete_results(tmp_path):
  config = small_config(alpha_init=1e6, opt_lr=1e6, grad_clip_norm=1e30)
  with pytest.raises(train.DivergenceError,
                     match=r"task 0, epoch 0, step \d+.*Lower alpha_init, opt_lr, "
                     "grad_clip_norm"):
    train.run(config, str(tmp_path))
  with open(tmp_path / "results.json") as f:
    r = json.load(f)
  assert r["status"] == "diverged" and r["tasks_completed"] == 0
  assert "task 0" in r["message"]


def _checkpoint_steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                if d.isdigit())


def test_checkpoints_follow_the_time_interval(finished_run, tmp_path):
  workdir, _ = finished_run  # 3 tasks of 20 steps, default 10 minutes: the last only
  assert _checkpoint_steps(workdir) == [60]
  config = small_config()
  config.checkpoint_every_minutes, config.keep_checkpoints = 0.0, 5
  train.run(config, str(tmp_path))
  # After every program: the one-step probe that times the steps, then each task
  # (of 20 steps, far below max_program_seconds) in one.
  assert _checkpoint_steps(str(tmp_path)) == [1, 20, 40, 60]


@pytest.mark.parametrize("field,value,pattern", [
    ("steps_per_program", -1, "steps_per_program must be >= 0"),
    ("max_program_seconds", 0.0, "max_program_seconds must be a finite number > 0"),
    ("max_program_seconds", float("inf"), "max_program_seconds must be a finite"),
    ("checkpoint_every_minutes", -1.0, "checkpoint_every_minutes must be a finite"),
    ("checkpoint_every_minutes", float("nan"), "checkpoint_every_minutes must be a finite"),
    ("keep_checkpoints", 0, "keep_checkpoints must be >= 1"),
])
def test_invalid_execution_settings_are_refused_before_writing(field, value, pattern,
                                                                tmp_path):
  config = small_config()
  config[field] = value
  with pytest.raises(ValueError, match=pattern):
    train.run(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("field,value,pattern", [
    ("learner.alpha_init", float("nan"), r"Non-finite config values: learner.alpha_init=nan"),
    ("learner.opt_lr", float("inf"), r"learner.opt_lr=inf"),
    ("grid", ";;;", r"has no entry"),
])
def test_invalid_configs_are_refused_before_anything_is_written(field, value, pattern,
                                                                tmp_path):
  config = small_config()
  if "." in field:
    config.learner[field.split(".")[1]] = value
  else:
    config[field] = value
  with pytest.raises(ValueError, match=pattern):
    train.run(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_a_missing_data_dir_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="--data_dir .*missing is not a directory"):
    train.run(small_config(), str(tmp_path / "w"), data_dir=str(tmp_path / "missing"))


def test_zero_step_sizes_and_truncated_tasks_are_stated(caplog):
  config = small_config(alpha_init=0.0, samples=205)
  train.validate_config(config)
  text = caplog.text
  assert "alpha_init = 0: this run does not learn through it" in text
  assert ("samples_per_task=205 is not a multiple of batch_size=10: the last 5 "
          "samples of each task are not trained on") in text


def test_a_locked_workdir_is_refused_and_the_holder_named(tmp_path):
  """While one run holds the workdir (here a second process holding its lock), a
  run on it stops at once with one line naming the holder; its outputs are left
  alone. Once the holder exits the lock is free (a killed holder included)."""
  workdir = tmp_path / "w"
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from lamaml_jax import io_utils\n"
       f"with io_utils.WorkdirLock({str(workdir)!r}):\n"
       "  print('locked', flush=True); time.sleep(60)"],
      cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(io_utils.WorkdirLockedError,
                       match=rf"in use by another run \(process {holder.pid} on "):
      train.run(small_config(tasks=1, samples=20), str(workdir))
    assert sorted(os.listdir(workdir)) == [".lock"]  # nothing else written
  finally:
    holder.kill()
    holder.wait()
  out = train.run(small_config(tasks=1, samples=20), str(workdir))
  assert out["status"] == "complete"


def _tensorboard_steps(workdir):
  """{tag: [steps]} as TensorBoard shows them (its purge of resumed files applied)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  acc.Reload()
  return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_and_log_after_two_resumes_equal_an_uninterrupted_run(
    finished_run, tmp_path, run_stopped_after_checkpoints):
  """Stopped after the checkpoint of step 25 (mid-task) and again after that of
  step 40 (a task end, its evaluation written just before), then finished: every
  TensorBoard scalar and every metrics.jsonl step as in one go."""
  whole_dir, _ = finished_run
  config = small_config()
  config.steps_per_program, config.checkpoint_every_minutes = 5, 0.0
  run_stopped_after_checkpoints(config, str(tmp_path), (25, 40))
  train.run(config, str(tmp_path))
  want, got = _tensorboard_steps(whole_dir), _tensorboard_steps(str(tmp_path))
  assert got["eval/mean_seen_accuracy"] == [20, 40, 60]
  # The uninterrupted run has programs of 20 steps; compare the steps both log.
  assert got["eval/mean_seen_accuracy"] == want["eval/mean_seen_accuracy"]
  assert got["train/loss"] == list(range(5, 61, 5))
  steps = [r["global_step"] for r in io_utils.read_jsonl(tmp_path / "metrics.jsonl")]
  assert steps == sorted(steps) and len(steps) == len(set(
      (r["global_step"], "eval_accuracy" in r)
      for r in io_utils.read_jsonl(tmp_path / "metrics.jsonl")))
