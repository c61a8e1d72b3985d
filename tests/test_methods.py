"""Every registered method, old and new, end to end: through the command line on
3 tasks of mnist5k_rotations (methods that need task-incremental heads on
mnist5k_split, and those with a task-end step on both), `observe` traced once
over tasks and epochs, and an interrupted run resumed to the uninterrupted one's
results."""
import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

import configs
from lamaml_jax import checkpointing
from lamaml_jax import learners
from lamaml_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
SPLIT_ONLY = ("icarl",)            # task-incremental heads: no single-head stream
BOTH = ("meta_bgd",)               # also on the split benchmark
RUNS = ([(m, "mnist5k_rotations") for m in learners.METHODS if m not in SPLIT_ONLY]
        + [(m, "mnist5k_split") for m in learners.METHODS if m in SPLIT_ONLY + BOTH])


# Smaller programs than the cells' (compile time) where a test need not run the
# cell itself; the state is the same kind.
SMALL = {"mer": dict(batches_per_example=2),
         "meta_bgd": dict(inner_steps=2, glances=1, mc_iters=1)}


def dataset_of(method):
  return "mnist5k_split" if method in SPLIT_ONLY else "mnist5k_rotations"


# Three through the command line (each a fresh process: the config file, flags
# and main's outputs); the rest through train.run in this process (suite time).
COMMAND_LINE = ("lamaml", "gem", "icarl")


@pytest.mark.parametrize("method,dataset", RUNS)
def test_method_runs_end_to_end(method, dataset, tmp_path):
  workdir = tmp_path / "run"
  overrides = {"num_tasks": 3, "samples_per_task": 40,
               # Meta-BGD's programs smaller (compile time; test_meta_bgd checks
               # the cell's).
               **{f"learner.{k}": v for k, v in SMALL.get(method, {}).items()
                  if method in BOTH},
               # The La-MAML family's unrolled inner loop at k = 2 single-sample
               # slices instead of 10 (compile time; the same paths run).
               **({"batch_size": 2, "learner.inner_steps": 2}
                  if method in ("lamaml", "sync", "cmaml", "laer") else {})}
  if method in COMMAND_LINE:
    r = subprocess.run(
        [sys.executable, "-m", "lamaml_jax.main", f"--method={method}",
         f"--dataset={dataset}", f"--workdir={workdir}", "--compilation_cache_dir=",
         *[f"--config.{k}={v}" for k, v in overrides.items()]],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
  else:
    config = configs.get_config(method, dataset)
    for k, v in overrides.items():
      node, leaf = (config.learner, k[8:]) if k.startswith("learner.") else (config, k)
      node[leaf] = v
    train.run(config, str(workdir))
  with open(workdir / "results.json") as f:
    out = json.load(f)
  assert out["method"] == method and out["status"] == "complete"
  acc = np.array(out["accuracy_matrix"], dtype=float)
  assert acc.shape == (3, 3) and np.all((acc >= 0) & (acc <= 1))
  assert 0 <= out["ra"] <= 1  # how well each learns: benchmarks/methods_table.py
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)


# MER, iCaRL and Meta-BGD check this in their own test files (suite time).
@pytest.mark.parametrize("method", [m for m in learners.METHODS
                                    if m not in ("mer", "icarl", "meta_bgd")])
def test_observe_is_traced_once(method):
  config = configs.get_config(method, dataset_of(method))
  config.num_tasks, config.samples_per_task = 3, 40
  for k, v in SMALL.get(method, {}).items():
    config.learner[k] = v
  parts = train.build(config)
  bench = parts.benchmarks[0]
  example = train.example_batch(bench, config.batch_size)
  state = parts.learner.init(jax.random.PRNGKey(0), example)
  observe = jax.jit(chex.assert_max_traces(parts.learner.observe, n=1))
  chex.clear_trace_counter()
  b = config.batch_size
  for task, epoch in ((0, 0), (0, 1), (1, 0), (2, 0)):
    batch = example._replace(
        x=jax.jit(bench.preprocess)(bench.train_x[task, :b]),
        y=bench.train_y[task, :b], task=np.full((b,), task, np.int32))
    state, metrics = observe(state, batch, np.int32(epoch))
    assert bool(metrics["finite"]), method


# Methods whose state holds more than weights and a reservoir (per-example steps,
# exemplar sets with end_task, Bayesian means and deviations).
RESUMED = [m for m in ("mer", "icarl", "meta_bgd") if m in learners.METHODS]


@pytest.mark.parametrize("method", RESUMED)
def test_interrupted_run_resumes_to_the_same_results(method, tmp_path, monkeypatch):
  """A run stopped mid-task 1 (its checkpoint after step 8 of 10 fails) and started
  again equals the uninterrupted run: accuracy matrix and learner summary."""
  def config(**run):
    c = configs.get_config(method, dataset_of(method))
    c.num_tasks, c.samples_per_task = 2, 10 * c.batch_size
    for k, v in SMALL.get(method, {}).items():
      c.learner[k] = v
    for k, v in run.items():
      c[k] = v
    return c

  whole = train.run(config(), str(tmp_path / "whole"))
  original = checkpointing.Checkpointer.save

  def failing_save(self, step, item):
    if step == 18:
      raise KeyboardInterrupt
    return original(self, step, item)

  cut = config(checkpoint_every_minutes=0.0, steps_per_program=4)
  with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
    patch.setattr(checkpointing.Checkpointer, "save", failing_save)
    train.run(cut, str(tmp_path / "cut"))
  with checkpointing.Checkpointer(
      os.path.join(tmp_path, "cut", train.CHECKPOINT_DIR)) as ckpt:
    assert ckpt.latest_step() == 14  # resumes mid-task 1, not from scratch
  again = train.run(cut, str(tmp_path / "cut"))
  assert again["status"] == "complete"
  for key in ("accuracy_matrix", "ra", "sgd_steps", "meta_updates"):
    assert again.get(key) == whole.get(key), key
