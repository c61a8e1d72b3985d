"""Every registered method, old and new, end to end: through the command line on
3 tasks of mnist5k_rotations, and `observe` traced once over tasks and epochs."""
import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

import configs
from lamaml_jax import learners
from lamaml_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.mark.parametrize("method", learners.METHODS)
def test_method_runs_through_the_command_line(method, tmp_path):
  workdir = tmp_path / "run"
  r = subprocess.run(
      [sys.executable, "-m", "lamaml_jax.main", f"--method={method}",
       "--dataset=mnist5k_rotations", f"--workdir={workdir}", "--compilation_cache_dir=",
       "--config.num_tasks=3", "--config.samples_per_task=100"],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  with open(workdir / "results.json") as f:
    out = json.load(f)
  assert out["method"] == method and out["status"] == "complete"
  acc = np.array(out["accuracy_matrix"], dtype=float)
  assert acc.shape == (3, 3) and np.all((acc >= 0) & (acc <= 1))
  assert 0 <= out["ra"] <= 1  # how well each learns: benchmarks/methods_table.py
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)


@pytest.mark.parametrize("method", learners.METHODS)
def test_observe_is_traced_once(method):
  config = configs.get_config(method, "mnist5k_rotations")
  config.num_tasks, config.samples_per_task = 3, 40
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
