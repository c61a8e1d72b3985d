"""Crash safety of the command line: SIGKILLed runs resume to identical results.

Every run here is the same tiny command (3 tasks x 20 steps, programs of 5 steps,
a checkpoint after every program). One reference run goes uninterrupted, in the
background, while another workdir is killed with SIGKILL at chosen moments (during
the first checkpoint write, during a mid-task checkpoint write, after the last
checkpoint but before results.json) and re-run each time with the same command;
its results.json and metrics.jsonl must equal the reference's exactly. A corrupt
checkpoint must stop the run with one clear error, never restart it silently.

The launches share a persistent XLA compilation cache (a temporary directory) to
halve their start-up; the reference and the first killed launch compile afresh,
the later launches load the cached programs, so identical results also show that
a cached program computes what a freshly compiled one does.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TASKS, STEPS_PER_TASK = 3, 20  # 200 samples per task / batch size 10, 1 epoch.
LAST_STEP = NUM_TASKS * STEPS_PER_TASK
ARGS = ("--config.num_tasks=3", "--config.samples_per_task=200",
        "--config.learner.glances=2", "--config.steps_per_program=5",
        # 6 ms: a checkpoint after every program of 5 steps.
        "--config.checkpoint_every_minutes=0.0001")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.3"}
TIMEOUT_S = 300
# Everything in results.json but wall_time_s (and the constant metadata).
COMPARED = ("status", "tasks_completed", "accuracy_matrix", "untrained_accuracy",
            "ra", "bti", "bti_official", "la", "fwt", "meta_updates")
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's unfinished checkpoint directories
RESUMED = re.compile(r"Resumed .* from checkpoint (\d+) \(task (\d+), step (\d+)\)")


def _command(workdir, *extra):
  return [sys.executable, "-m", "lamaml_jax.main", f"--workdir={workdir}", *ARGS,
          *extra]


def _start(workdir, log_path, *extra):
  log = open(log_path, "w")
  try:
    return subprocess.Popen(_command(workdir, *extra), cwd=ROOT, env=ENV,
                            stdout=log, stderr=subprocess.STDOUT)
  finally:
    log.close()  # the child holds its own descriptor


def _checkpoints(workdir):
  """(finished steps, names of unfinished orbax temporaries) in workdir."""
  try:
    names = os.listdir(os.path.join(workdir, "checkpoints"))
  except FileNotFoundError:
    return set(), []
  return {int(n) for n in names if n.isdigit()}, [n for n in names if TMP_SUFFIX in n]


def _run_until(workdir, log_path, condition):
  """Runs the command, SIGKILLs it as soon as `condition()` holds.

  Returns:
    True if it was killed, False if it finished first (then it must have
    succeeded).
  """
  proc = _start(workdir, log_path)
  deadline = time.time() + TIMEOUT_S
  try:
    while proc.poll() is None:
      if condition():
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True
      assert time.time() < deadline, "run did not reach its kill point in time"
      time.sleep(0.001)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  with open(log_path) as f:
    assert proc.returncode == 0, f.read()[-3000:]
  return False


def _resumed_from(log_path):
  """(checkpoint, task, step) the run logged it resumed from, or None."""
  with open(log_path) as f:
    m = RESUMED.search(f.read())
  return tuple(int(g) for g in m.groups()) if m else None


def _load(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {k: results[k] for k in COMPARED}, records


class _Reference:
  """The uninterrupted run, started at once in the background."""

  def __init__(self, workdir):
    self.workdir = workdir
    self.log_path = os.path.join(os.path.dirname(workdir), "reference.log")
    self._proc = _start(workdir, self.log_path)
    self._loaded = None

  def wait(self):
    if self._loaded is None:
      try:
        self._proc.wait(timeout=TIMEOUT_S)
      finally:
        if self._proc.poll() is None:
          self._proc.kill()
      with open(self.log_path) as f:
        assert self._proc.returncode == 0, f.read()[-3000:]
      self._loaded = _load(self.workdir)
    return self._loaded


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  ENV["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("xla_cache"))
  yield
  del ENV["JAX_COMPILATION_CACHE_DIR"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, _compilation_cache):  # pylint: disable=unused-argument
  ref = _Reference(str(tmp_path_factory.mktemp("reference") / "run"))
  yield ref
  if ref._proc.poll() is None:  # pylint: disable=protected-access
    ref._proc.kill()  # pylint: disable=protected-access
    ref._proc.wait()  # pylint: disable=protected-access


def test_sigkilled_runs_resume_to_identical_results(reference, tmp_path):
  workdir = str(tmp_path / "run")
  logs = [str(tmp_path / f"launch{i}.log") for i in range(4)]
  notes = []  # what happened, for failure messages

  def mid_task(step):
    return step > STEPS_PER_TASK and step % STEPS_PER_TASK

  # 0. During the first checkpoint's write: usually no finished checkpoint yet, so
  # the next launch starts afresh, over the log records of the killed one.
  killed = _run_until(workdir, logs[0], lambda: bool(_checkpoints(workdir)[1]))
  finished, tmps = _checkpoints(workdir)
  notes.append(f"launch 0 killed={killed}, finished {sorted(finished)}, tmp {tmps}")
  fresh_start = not finished

  # 1. During a checkpoint write in the middle of task 1 or 2, after finished
  # mid-task checkpoints exist.
  def writing_mid_task():  # newest finished and the one being written: mid-task
    finished, tmps = _checkpoints(workdir)
    return (bool(finished) and mid_task(max(finished)) and
            any(mid_task(int(n.split(".")[0])) for n in tmps))
  killed = _run_until(workdir, logs[1], writing_mid_task)
  if fresh_start:
    assert _resumed_from(logs[1]) is None, notes
  finished, tmps = _checkpoints(workdir)
  notes.append(f"launch 1 killed={killed}, finished {sorted(finished)}, tmp {tmps}")
  newest = max(finished)
  if killed:  # mid-task, so the newest finished checkpoint is mid-task too
    assert mid_task(newest), notes

  # 2. After the last checkpoint, before (or while) results.json is written.
  killed_at_end = _run_until(workdir, logs[2],
                             lambda: LAST_STEP in _checkpoints(workdir)[0])
  notes.append(f"launch 2 killed={killed_at_end}, results.json then: "
               f"{os.path.exists(os.path.join(workdir, 'results.json'))}")
  if killed:
    assert _resumed_from(logs[2]) == (newest, newest // STEPS_PER_TASK,
                                      newest % STEPS_PER_TASK), notes

  # 3. To completion.
  proc = subprocess.run(_command(workdir), cwd=ROOT, env=ENV, capture_output=True,
                        text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(logs[3], "w") as f:
    f.write(proc.stderr)
  if killed_at_end:  # nothing left to train: straight to the results
    assert _resumed_from(logs[3]) == (LAST_STEP, NUM_TASKS, 0), notes
  resumes = [_resumed_from(log) for log in logs]
  notes.append(f"resumed from (checkpoint, task, step): {resumes}")
  assert any(r and r[2] for r in resumes), ("no mid-task resume", notes)

  results, records = _load(workdir)
  ref_results, ref_records = reference.wait()
  assert _resumed_from(reference.log_path) is None
  assert results == ref_results, notes
  assert records == ref_records, notes  # no duplicated or lost log records
  # Killed writes leave nothing behind once the run has gone on.
  _, tmps = _checkpoints(workdir)
  assert not tmps, tmps
  assert not [n for n in os.listdir(workdir) if n.endswith(".tmp")]


def _data_files(workdir, step):
  """The array data files (OCDBT's d/ directories) of checkpoint `step`."""
  out = [os.path.join(dirpath, name) for dirpath, _, names in
         os.walk(os.path.join(workdir, "checkpoints", str(step)))
         if os.path.basename(dirpath) == "d" for name in names]
  assert out
  return out


def test_damaged_checkpoints_fall_back_or_stop_with_a_clear_error(reference, tmp_path):
  """One flipped bit in the newest checkpoint's weights: the older checkpoint is
  used and the results equal the uninterrupted run's. Every checkpoint damaged:
  one line, nothing rewritten; --overwrite then starts afresh."""
  reference.wait()
  workdir = str(tmp_path / "run")
  shutil.copytree(reference.workdir, workdir)
  finished, _ = _checkpoints(workdir)
  newest, older = max(finished), min(finished)
  path = max(_data_files(workdir, newest), key=os.path.getsize)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x04
  open(path, "wb").write(bytes(data))
  proc = subprocess.run(_command(workdir), cwd=ROOT, env=ENV, capture_output=True,
                        text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert re.search(rf"Checkpoint {newest} in \S+ differs from the digest written with "
                   rf"it .*set aside as unverified-{newest}, resumed from checkpoint "
                   rf"{older}\.", proc.stderr), proc.stderr[-3000:]
  assert _load(workdir) == reference.wait()

  for step in _checkpoints(workdir)[0]:
    for path in _data_files(workdir, step):
      with open(path, "r+b") as f:
        f.truncate(max(1, os.path.getsize(path) // 2))
  def outputs():
    with open(os.path.join(workdir, "results.json")) as f, open(
        os.path.join(workdir, "metrics.jsonl")) as g:
      return f.read(), g.read(), sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  before = outputs()
  proc = subprocess.run(_command(workdir), cwd=ROOT, env=ENV, capture_output=True,
                        text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert re.search(r"error: No checkpoint in \S+checkpoints can be restored: checkpoint "
                   rf"{newest} cannot be read .*; checkpoint {older} cannot be read .*"
                   r"pass --overwrite to start the run afresh", proc.stderr), (
                       proc.stderr[-3000:])
  # Not restarted: nothing trained, nothing rewritten, nothing moved.
  assert "task 1/3" not in proc.stderr
  assert outputs() == before

  proc = subprocess.run(_command(workdir, "--overwrite"), cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Resumed" not in proc.stderr
  assert _load(workdir) == reference.wait()
  assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints"))
              if n.startswith("unverified")]


_DISK_FILLS_AT_THE_FOURTH_CHECKPOINT = """
import sys
import orbax.checkpoint as ocp
from lamaml_jax import main
real, calls = ocp.CheckpointManager.save, []
def save(self, *args, **kwargs):
  calls.append(None)
  if len(calls) == 4:  # as TensorStore reports a full disk
    raise ValueError('RESOURCE_EXHAUSTED: Error writing "item/0" in OCDBT database: '
                     'Failed to write 18771 bytes to file 14: No space left on device')
  return real(self, *args, **kwargs)
ocp.CheckpointManager.save = save
main.run_cli(["lamaml_jax.main", *sys.argv[1:]])
"""


def test_a_full_disk_is_one_line_and_the_same_command_resumes(reference, tmp_path):
  workdir = str(tmp_path / "run")
  proc = subprocess.run([sys.executable, "-c", _DISK_FILLS_AT_THE_FOURTH_CHECKPOINT,
                         *_command(workdir)[3:]], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
  assert len(errors) == 1 and re.match(
      r"error: cannot use \S+/checkpoints: no space is left on its device: free some "
      r"space .* rerun the same command to resume", errors[0]), proc.stderr[-3000:]
  log = str(tmp_path / "resumed.log")
  assert not _run_until(workdir, log, lambda: False)
  assert _resumed_from(log) == (15, 0, 15)  # the third checkpoint, written before
  assert _load(workdir) == reference.wait()


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_checkpoint_stop_and_resume_identically(
    reference, tmp_path, signum, status):
  """SIGTERM (a scheduler's preemption) or SIGINT (Ctrl-C) during task 2: the run
  finishes the running program, checkpoints, says one line and exits 128 +
  signal; the same command then finishes as the uninterrupted run."""
  workdir, log_path = str(tmp_path / "run"), str(tmp_path / "launch0.log")
  proc = _start(workdir, log_path)
  deadline = time.time() + TIMEOUT_S
  try:
    # Task 2 is steps 20-40 in programs of 5: signalled once its first checkpoint
    # (25) is listed, the run stops within task 2 even when orbax lists a
    # checkpoint a program or two late on a loaded machine.
    while proc.poll() is None and not any(s > 20 for s in _checkpoints(workdir)[0]):
      assert time.time() < deadline, "run did not reach task 2 in time"
      time.sleep(0.01)
    proc.send_signal(signum)
    proc.wait(timeout=TIMEOUT_S)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  with open(log_path) as f:
    text = f.read()
  assert proc.returncode == status, text[-3000:]
  assert "Traceback" not in text, text[-3000:]
  assert re.search(rf"Interrupted by {signal.Signals(signum).name} at task 2 step "
                   r"\d+ \(checkpoint \d+ written\); rerun the same command", text), text[-2000:]
  again = _start(workdir, str(tmp_path / "launch1.log"))
  assert again.wait(timeout=TIMEOUT_S) == 0
  assert _resumed_from(str(tmp_path / "launch1.log")) is not None
  assert _load(workdir) == reference.wait()
