"""One run over several processes (`distributed`, `members.Placement`).

The two-process test starts two `python -m lamaml_jax.main --distributed`
processes on localhost (one XLA:CPU device each, gloo collectives), stops them
with a SIGTERM to process 1 alone, resumes them, and holds the outputs equal to
a one-process run of the same config.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import configs
from lamaml_jax import distributed
from lamaml_jax import members
from lamaml_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# iCaRL covers the end-of-task program, the probe the alignment program; 3 seeds
# on 2 processes: process 0 holds seeds 0 and 1, process 1 seed 2 and a pad.
FLAGS = {"method": "icarl", "dataset": "mnist5k_split", "num_seeds": 3,
         "config.num_tasks": 3, "config.samples_per_task": 40,
         "config.probes": "alignment", "config.probe_samples": 8,
         "config.checkpoint_every_minutes": 0, "config.steps_per_program": 1}


def test_coordinates_go_together_and_must_fit():
  with pytest.raises(ValueError, match="go together"):
    distributed.initialize("127.0.0.1:1234", None, None)
  with pytest.raises(ValueError, match=r"process_id must be in \[0, --num_processes\)"):
    distributed.initialize("127.0.0.1:1234", 2, 2)


def test_coordinates_without_distributed_are_one_line_of_error():
  proc = subprocess.run([sys.executable, "-m", "lamaml_jax.main", "--process_id=1"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
      "error: --coordinator_address, --num_processes and --process_id need "
      "--distributed."), proc.stderr[-2000:]


def test_one_process_agrees_with_itself():
  np.testing.assert_array_equal(distributed.agree([3, 0, 15]), [[3, 0, 15]])
  assert distributed.gather_json({"a": [1, 2]}) == [{"a": [1, 2]}]
  distributed.barrier("a barrier alone returns at once")


def test_device_tables_hold_each_devices_seeds_once():
  # Six members (5 and a pad) on two devices: seeds 0, 0, 1 | 1, 2, 2.
  place = members.Placement(5, "map", devices=("d0", "d1"))
  tables, index = place.blocks([0, 0, 1, 1, 2, 2])
  assert tables == [[0, 1], [1, 2]]
  np.testing.assert_array_equal(index, [0, 0, 1, 0, 1, 1])
  # Uneven tables are padded with their last seed, to one width.
  tables, index = place.blocks([0, 1, 2, 3, 3, 3])
  assert tables == [[0, 1, 2], [3, 3, 3]]
  np.testing.assert_array_equal(index, [0, 1, 2, 0, 0, 0])
  # One device: one table of every seed, each member's index its seed's rank.
  tables, index = members.Placement(4, "map").blocks([2, 0, 2, 1])
  assert tables == [[0, 1, 2]]
  np.testing.assert_array_equal(index, [2, 0, 2, 1])
  with pytest.raises(ValueError, match="3 keys for 6"):
    place.blocks([0, 1, 2])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_processes(workdir, log_prefix, workdir_1=None):
  """Processes 0 and 1 of one run (process 1 on `workdir_1` if given); later
  launches load the first one's programs from a compilation cache."""
  port = _free_port()
  cache = os.path.join(os.path.dirname(log_prefix), "xla_cache")
  argv = [f"--{k}={v}" for k, v in FLAGS.items()] + [f"--compilation_cache_dir={cache}"]
  # One device a process: the suite's compile flags without any device count.
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": os.environ.get("LAMAML_JAX_TEST_XLA_FLAGS", "")}
  procs = []
  for i in range(2):
    log = open(f"{log_prefix}.{i}.log", "w")
    where = f"--workdir={workdir_1 if i and workdir_1 else workdir}"
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "lamaml_jax.main", *argv, where, "--distributed",
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
         f"--process_id={i}"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs


def _wait(procs, log_prefix, timeout=300):
  """Exit codes and log tails; a process still running after `timeout` s is
  killed (code None), so that a hang fails with both logs instead of blocking."""
  deadline, codes = time.time() + timeout, []
  for p in procs:
    try:
      codes.append(p.wait(timeout=max(deadline - time.time(), 1)))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()
      codes.append(None)
  logs = [open(f"{log_prefix}.{i}.log").read()[-3000:] for i in range(2)]
  return codes, logs


def _outputs(results):
  return [(m["accuracy_matrix"], m["alignment"], m["ra"]) for m in results["members"]]


def test_two_processes_stop_together_resume_and_match_one_process(tmp_path):
  workdir, logs = str(tmp_path / "two"), str(tmp_path / "proc")
  procs = _start_processes(workdir, logs)
  metrics = os.path.join(workdir, train.METRICS_FILE)
  deadline = time.time() + 300
  while not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 3):
    assert time.time() < deadline and all(p.poll() is None for p in procs), \
        _wait(procs, logs, 10)
    time.sleep(0.1)
  procs[1].send_signal(signal.SIGTERM)  # process 1 alone: both must stop
  codes, text = _wait(procs, logs)
  assert codes == [143, 143], text
  assert "rerun the same command to resume" in text[0], text
  assert not os.path.exists(os.path.join(workdir, train.RESULTS_FILE))

  codes, text = _wait(_start_processes(workdir, logs), logs)
  assert codes == [0, 0], text
  two = json.load(open(os.path.join(workdir, train.RESULTS_FILE)))

  config = configs.get_config("icarl", "mnist5k_split")
  for k, v in FLAGS.items():
    if k.startswith("config."):
      setattr(config, k[len("config."):], v)
  config.num_seeds = 3
  one = train.run(config, str(tmp_path / "one"))
  assert two["devices"] == 2 and one["devices"] == 1
  assert _outputs(two) == _outputs(one)
  # The whole results.json is the one process's, but for the clock and the devices.
  same = lambda r: {k: v for k, v in r.items() if k not in ("wall_time_s", "devices")}
  assert same(two) == same(json.loads(json.dumps(one)))
  # Process 0 alone wrote the log: every record once, as the one process wrote it.
  assert open(metrics).read() == open(tmp_path / "one" / train.METRICS_FILE).read()
  # One events file for each of process 0's two runs (none from process 1).
  assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 2

  # A workdir that is not shared (process 1 sees no checkpoints): both processes
  # stop with the reason instead of waiting for each other forever.
  codes, text = _wait(_start_processes(workdir, logs, str(tmp_path / "own")), logs)
  assert codes == [1, 1], text
  assert all("on a file system that all of them share" in t for t in text), text
