"""The command line: bad input gets one clear line naming the fix."""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, workdir, env=None):
  return subprocess.run(
      [sys.executable, "-m", "lamaml_jax.main", f"--workdir={workdir}", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**(os.environ if env is None else env), "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("args,pattern", [
    (["--method=maml"], "--method=maml: value should be one of <lamaml|sync|cmaml|laer>"),
    (["--dataset=cifar10"], "Unknown dataset 'cifar10'; valid: mnist5k_rotations"),
    (["--config.num_taks=3"], r"^error: unknown config field 'num_taks' in "
     r"--config.num_taks. Did you mean \"num_tasks\" instead of \"num_taks\"\?"),
    (["--config.learner.alpha_init=fast"], "could not convert string to float: 'fast'"),
    (["--config.learner.opt_lr=-0.1"], "opt_lr must be a finite number >= 0, got -0.1"),
    (["--config.learner.replay_batch_size=300"],
     "replay_batch_size=300 exceeds memory_size=200"),
    (["--dataset=cifar100", "--config.num_tasks=21"], "at most 20"),
])
def test_bad_input_is_one_clear_error(args, pattern, tmp_path):
  result = run_main(*args, workdir=str(tmp_path / "w"))
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  assert __import__("re").search(pattern, result.stderr, re.M), result.stderr[-2000:]
  # Said once, and nothing written to the workdir.
  lines = [l for l in result.stderr.splitlines() if "error" in l.lower()]
  assert len(lines) == 1, result.stderr[-2000:]
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("content,pattern", [
    (None, r"^error: --config file \S+missing.py does not exist; pass an existing one"),
    ("def get_config(:\n", r"^error: --config file \S+cfg.py cannot be loaded: .*\(line 1\)"),
    ("def get_config():\n  return 1 / 0\n",
     r"^error: --config file \S+cfg.py cannot be loaded: ZeroDivisionError: division "
     r"by zero \(line 2\)\. Fix it or pass another file\.$"),
])
def test_a_config_file_that_cannot_be_loaded_is_one_line(content, pattern, tmp_path):
  path = tmp_path / ("missing.py" if content is None else "cfg.py")
  if content is not None:
    path.write_text(content)
  result = run_main(f"--config={path}", workdir=str(tmp_path / "w"))
  assert result.returncode == 1
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  assert re.search(pattern, result.stderr, re.M), result.stderr[-2000:]
  assert not (tmp_path / "w").exists()


def test_an_unwritable_workdir_is_one_line(tmp_path):
  """sysfs refuses new directories (EPERM, or EROFS where it is mounted read-only)."""
  if not os.path.isdir("/sys") or os.path.exists("/sys/lamaml_jax_test"):
    pytest.skip("needs a /sys that refuses new directories")
  result = run_main("--config.num_tasks=2", "--config.samples_per_task=20",
                    workdir="/sys/lamaml_jax_test")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  assert re.search(r"^error: cannot use /sys/lamaml_jax_test: (operation not permitted|"
                   r"its file system is read-only|permission denied)", result.stderr,
                   re.M), result.stderr[-2000:]


def test_help_exits_0(tmp_path):
  result = run_main("--helpshort", workdir=str(tmp_path / "w"))
  assert result.returncode == 0 and "--method" in result.stdout + result.stderr


def test_a_short_run_from_the_command_line(tmp_path, production_xla_env):
  # Compiled as a user's run is (the rest of the suite compiles unoptimised).
  workdir = tmp_path / "w"
  cache = tmp_path / "xla_cache"
  timeline = tmp_path / "timeline.json"
  result = run_main("--method=cmaml", "--config.num_tasks=2",
                    "--config.samples_per_task=100", "--seed=3",
                    f"--compilation_cache_dir={cache}", f"--timeline={timeline}",
                    workdir=str(workdir), env=production_xla_env)
  assert result.returncode == 0, result.stderr[-3000:]
  phases = {p["phase"]: p for p in json.loads(timeline.read_text())["phases"]}
  assert phases["evaluate"]["calls"] == 3  # the untrained model and each task
  assert phases["train_program"]["calls"] >= 2 and phases["build"]["calls"] == 1
  assert {"imports_and_flags", "compile_train_program", "write_outputs"} <= set(phases)
  # orbax and matplotlib load while the host would wait for the device: during
  # the compilation, beside the first long program, or in part in each.
  loads = [phases[p]["calls"] for p in ("load_while_compiling", "load_beside_program")
           if p in phases]
  assert loads and all(c == 1 for c in loads), phases
  assert any(cache.iterdir()), "the task program should be in the compilation cache"
  assert "task 2/2" in result.stderr and "RA" in result.stderr
  assert (workdir / "results.json").exists()
  assert f"Outputs in {workdir} (results: {workdir}/results.json)" in result.stderr
  assert '"seed": 3' in (workdir / "config.json").read_text()


_EXITS = """
import atexit, sys, threading, time
from lamaml_jax import cli
out = sys.argv[1]
atexit.register(lambda: print("atexit handler ran", flush=False))
def late_write():  # a non-daemon thread still working when the main one exits
  time.sleep(0.3)
  with open(out, "w") as f:
    f.write("written")
threading.Thread(target=late_write).start()
print("buffered stdout", end="")
sys.stderr.write("buffered stderr")
cli.exit_process(eval(sys.argv[2]))
raise AssertionError("exit_process returned")
"""


@pytest.mark.parametrize("code,status", [(None, 0), (0, 0), (3, 3), ("error: bad", 1)])
def test_exit_process_keeps_what_the_interpreter_would_do_before_its_teardown(
    code, status, tmp_path):
  out = tmp_path / "late.txt"
  result = subprocess.run([sys.executable, "-c", _EXITS, str(out), repr(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == status, result.stderr[-2000:]
  assert result.stdout == "buffered stdoutatexit handler ran\n"
  assert result.stderr.startswith("buffered stderr"), result.stderr[-2000:]
  assert ("error: bad" in result.stderr) == isinstance(code, str)
  assert out.read_text() == "written"  # the thread was joined
