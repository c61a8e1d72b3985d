"""The one impure loop: stream segments in order, compiled training programs,
evaluation, logs, checkpoints and results.

  run(config, workdir) -> results dict

The runner knows a learner only through its protocol (`learners.base`): it
compiles `observe` into training programs, `end_task` and `predict` into their
own, logs whatever scalars `observe` returns and reads nothing else from the
state. Per segment t of the schedule (`schedules`: task t, or the t-th of T
equal parts of the IID stream): its data move to the device once; the training
program runs its steps in programs of `config.steps_per_program` steps (0,
the default: lengths chosen from measured step time so that none outlasts
`config.max_program_seconds`; `program_length`);
`end_task` runs; the evaluation program fills row t of the accuracy matrix (and
of the validation matrix, where the benchmark has a validation split). After a
chunk or a segment a checkpoint is written once `config.checkpoint_every_minutes`
have passed since the last one (0: every time), and always after the last
segment (BUILD.md has the measured cost of a write). A checkpoint never falls
between a segment's last step and its evaluation, so `end_task` runs exactly once
per segment also across resumes. Re-running with the same workdir resumes from
the newest checkpoint and gives bit-identical results on the same machine (all
stream randomness is a function of seed, stream and step).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import math
import os
import shutil
import signal
import threading
import time
from typing import Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lamaml_jax import alignment
from lamaml_jax import checkpointing
from lamaml_jax import distributed
from lamaml_jax import io_utils
from lamaml_jax import members as members_lib
from lamaml_jax import metrics as metrics_lib
from lamaml_jax import networks
from lamaml_jax import program_length
from lamaml_jax import provenance
from lamaml_jax import schedules
from lamaml_jax import summary_writer
from lamaml_jax import task_program
from lamaml_jax import timeline as timeline_lib
from lamaml_jax import learners
from lamaml_jax.data import make_benchmark
from lamaml_jax.data.benchmark import Benchmark
from lamaml_jax.learners.base import BuildContext, Learner, Method
from lamaml_jax.types import Batch

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
# In the order --overwrite deletes them: checkpoints first (so that an interrupted
# deletion never leaves a resumable run without its logs), config.json last (until
# everything else is gone it still names the run the files belong to).
OUTPUTS = (CHECKPOINT_DIR, RESULTS_FILE, METRICS_FILE, "tensorboard",
           "accuracy_matrix.png", "task_accuracies.png", CONFIG_FILE)


class DivergenceError(RuntimeError):
  """A NaN or infinity appeared in the loss, gradients, weights or learning rates."""


class Interrupted(Exception):
  """SIGTERM or SIGINT arrived; the run checkpointed where it was and stopped.

  Attributes:
    signum: the signal; the conventional exit status is 128 + signum (143 for
      SIGTERM, 130 for SIGINT).
  """

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class _StopRequests:
  """Records SIGTERM / SIGINT instead of dying mid-program (a Python handler
  cannot interrupt a running XLA program, which has donated its input state);
  the run loop checkpoints and stops when the program returns. A second signal
  of the same kind exits at once. Installed only in the main thread."""

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous = {}

  def __enter__(self) -> "_StopRequests":
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # asked twice: stop now, as without the handler
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
    self.signum = signum
    logging.warning("%s received: stopping after the running program with a "
                    "checkpoint (send it again to stop at once).",
                    signal.Signals(signum).name)

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


# Metrics every learner's `observe` returns; the runner logs all the others too.
FINITE = "finite"


class WorkdirConflictError(ValueError):
  """The workdir holds a run of a different configuration."""


# Fields that change how a run is executed, not what it computes: a run may resume
# with other values.
EXECUTION_FIELDS = ("steps_per_program", "max_program_seconds", "checkpoint_every_minutes",
                    "keep_checkpoints", "eval_batch_size", "member_batching",
                    "member_devices")


def _config_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def check_execution_settings(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError (before anything is written) for invalid EXECUTION_FIELDS."""
  program_length.ProgramLength(config.steps_per_program, config.max_program_seconds)
  if not 0 <= config.checkpoint_every_minutes < float("inf"):
    raise ValueError("checkpoint_every_minutes must be a finite number >= 0 (0: a "
                     f"checkpoint after every program), got {config.checkpoint_every_minutes}.")
  if not config.keep_checkpoints >= 1:
    raise ValueError(f"keep_checkpoints must be >= 1, got {config.keep_checkpoints}.")


def _non_finite_fields(tree, prefix: str = "") -> list[str]:
  """Dotted names of the float fields of a (nested) config dict that are NaN/inf."""
  out = []
  for k, v in tree.items():
    if isinstance(v, dict):
      out += _non_finite_fields(v, f"{prefix}{k}.")
    elif isinstance(v, float) and not math.isfinite(v):
      out.append(f"{prefix}{k}={v}")
  return out


def validate_config(config: ml_collections.ConfigDict,
                    data_dir: Optional[str] = None) -> None:
  """Checks that need no data, before anything is built or written.

  Raises ValueError for a NaN/inf anywhere in the config, a grid string with no
  entry, or a --data_dir that does not exist. Warns when a learner step size is
  0 (that part does not learn) and when the batch size does not divide the task's
  samples (the remainder is not trained on).
  """
  bad = _non_finite_fields(config.to_dict())
  if bad:
    raise ValueError(f"Non-finite config values: {', '.join(bad)}; give finite numbers.")
  if config.grid and not any(p.strip() for p in config.grid.split(";")):
    raise ValueError(f"--config.grid={config.grid!r} has no entry; write "
                     "NAME=V1,V2;... or leave it empty for no grid.")
  if data_dir and not os.path.isdir(data_dir):
    raise ValueError(f"--data_dir {data_dir} is not a directory; pass the directory "
                     "that holds the prepared data (README, 'Data').")
  method = learners.method(config.method)
  zero = [name for name in method.step_sizes
          if config.learner.get(name, None) == 0]
  if zero:
    logging.warning("%s = 0: this run does not learn through %s.",
                    " = ".join(zero), "them" if len(zero) > 1 else "it")
  n, b = config.samples_per_task, config.batch_size
  if n is not None and b and n % b:
    logging.warning("samples_per_task=%d is not a multiple of batch_size=%d: the last "
                    "%d samples of each task are not trained on.", n, b, n % b)


def _differences(found, wanted, prefix: str = "") -> list[str]:
  """'field: A (workdir) vs B (this command)' for each leaf field that differs,
  nested dicts (config.learner) named with dots."""
  out = []
  for k in sorted(set(found) | set(wanted)):
    a, b, name = found.get(k), wanted.get(k), prefix + k
    if prefix == "" and k in EXECUTION_FIELDS:
      continue
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, name + ".")
    elif a != b:
      out.append(f"{name}: {a!r} in the workdir vs {b!r} now")
  return out


def check_workdir(config: ml_collections.ConfigDict, workdir: str,
                  overwrite: bool) -> None:
  """Refuses, before anything is built or written, a `workdir` that is not a
  directory or holds a run of a different config (unless `overwrite`)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirConflictError(f"--workdir {workdir} exists and is not a directory; "
                               "choose another --workdir.")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path) or overwrite:
    return
  try:
    with open(path) as f:
      found = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirConflictError(
        f"{path} cannot be read ({e}); pass --overwrite to delete that run and "
        "start this one, or use another --workdir.") from None
  diff = _differences(found, _config_json(config))
  if diff:
    raise WorkdirConflictError(
        f"{workdir} holds a run of a different config ({'; '.join(diff)}). Use "
        "another --workdir, or pass --overwrite to delete that run and start this one.")


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str,
                    overwrite: bool) -> None:
  """Creates `workdir` (after `check_workdir`), deleting a previous run's outputs
  if `overwrite`, and writes config.json."""
  check_workdir(config, workdir, overwrite)
  os.makedirs(workdir, exist_ok=True)
  if overwrite:
    for name in OUTPUTS:
      target = os.path.join(workdir, name)
      if os.path.isdir(target):
        shutil.rmtree(target)
      elif os.path.exists(target):
        os.remove(target)
  # Temporaries of atomic writes (io_utils) that a killed process left behind.
  for name in os.listdir(workdir):
    if name.endswith(".tmp") and any(name.startswith(f".{o}.") for o in OUTPUTS):
      os.remove(os.path.join(workdir, name))
  io_utils.atomic_write_json(os.path.join(workdir, CONFIG_FILE), _config_json(config))


@dataclasses.dataclass(frozen=True)
class Parts:
  """What `build` makes of a config.

  Attributes:
    members: one dict per member ({'seed': s, grid name: value, ...}).
    benchmarks: {seed: Benchmark}.
    benchmark_info: {seed: `Benchmark.info`} of every member's seed (with several
      processes, `benchmarks` holds only the seeds of this process's members).
    method: the registered `Method`; hparams: its hyperparameters.
    context: the `BuildContext` the learner was made for.
    learner: its pure functions.
    schedule: the stream schedule (`schedules`).
    train: compiled training program (`task_program.make_train_program`).
    evaluate: compiled evaluation program (`task_program.make_eval_program`).
    end_task: compiled end-of-task program, or None.
    alignment: compiled gradient-alignment probe (`alignment.make_program`), or
      None unless config.probes names it.
    placement: where the members run (`members.Placement`); the programs take
      `placement.padded` members.
  """
  members: list
  benchmarks: dict
  benchmark_info: dict
  method: Method
  hparams: object
  context: BuildContext
  learner: Learner
  schedule: object
  train: Callable
  evaluate: Callable
  end_task: Optional[Callable]
  alignment: Optional[Callable] = None
  placement: members_lib.Placement = members_lib.Placement(1)


def build_context(config: ml_collections.ConfigDict, benchmark: Benchmark,
                  schedule) -> BuildContext:
  """The `BuildContext` a learner of this run is made for."""
  if config.get("heads", "task") not in ("task", "class_incremental"):
    raise ValueError(f"heads must be 'task' or 'class_incremental', got "
                     f"{config.heads!r}.")
  network = networks.make_network(config.arch, benchmark.num_outputs)
  example = jax.eval_shape(benchmark.preprocess, jax.ShapeDtypeStruct(
      (1, *benchmark.input_shape), benchmark.train_x.dtype))
  return BuildContext(
      network=network, num_outputs=benchmark.num_outputs,
      classes_per_task=benchmark.classes_per_task, num_tasks=benchmark.num_tasks,
      samples_per_task=benchmark.samples_per_task, batch_size=config.batch_size,
      epochs=config.epochs, steps_per_task=schedule.steps(0),
      input_shape=tuple(example.shape[1:]), preprocess=benchmark.preprocess,
      augment=benchmark.augment if config.augment else None,
      class_incremental=config.get("heads", "task") == "class_incremental")


def make_schedule(config: ml_collections.ConfigDict, benchmark: Benchmark):
  return schedules.make_schedule(
      config.get("stream", "tasks"), num_tasks=benchmark.num_tasks,
      samples_per_task=benchmark.samples_per_task, batch_size=config.batch_size,
      epochs=config.epochs, tasks_per_batch=config.get("iid_tasks_per_batch", 0),
      steps_per_epoch=config.get("iid_steps_per_epoch", 0))


def build(config: ml_collections.ConfigDict, data_dir: Optional[str] = None) -> Parts:
  """Members, their benchmarks (by seed), learner, schedule and compiled programs.

  The programs map over the member axis (`members.Placement.map`: vmap, or
  lax.map on CPU, and over the devices of config.member_devices).
  """
  method = learners.method(config.method)
  hparams = learners.make_hparams(config.method, config.learner.to_dict())
  grid = members_lib.parse_grid(config.grid, method.sweepable)
  members = members_lib.make_members(config.seed, config.num_seeds, grid)
  placement = members_lib.Placement.create(len(members), config.member_batching,
                                           config.get("member_devices", 0))
  # Each process builds the benchmarks of its own members only.
  local = [placement.pad(members)[i] for i in placement.local_members]
  benchmarks = {}
  for seed in sorted({m["seed"] for m in local}):
    benchmarks[seed] = make_benchmark(
        config.dataset, seed=seed, data_dir=data_dir,
        num_tasks=config.num_tasks, samples_per_task=config.samples_per_task,
        class_order=config.get("class_order", "numpy"))
  info = {}
  for part in distributed.gather_json({s: b.info for s, b in benchmarks.items()}):
    info.update({int(s): i for s, i in part.items()})
  benchmark = benchmarks[local[0]["seed"]]
  schedule = make_schedule(config, benchmark)
  context = build_context(config, benchmark, schedule)
  learner = method.make(hparams, context)
  train = task_program.make_train_program(learner, schedule.spec, benchmark.preprocess,
                                          context.augment, placement,
                                          _train_compiler_options(),
                                          dynamic_length=True)
  evaluate = task_program.make_eval_program(learner, benchmark.preprocess,
                                            config.eval_batch_size, placement,
                                            context.class_incremental,
                                            config.get("eval_drop_last", False))
  end_task = task_program.make_end_task_program(learner, benchmark.preprocess, placement)
  probe = None
  if "alignment" in parse_probes(config, schedule, benchmark):
    probe = alignment.make_program(learner, benchmark.preprocess, placement)
  return Parts(members, benchmarks, info, method, hparams, context, learner, schedule,
               train, evaluate, end_task, probe, placement)


PROBES = ("alignment",)


def parse_probes(config: ml_collections.ConfigDict, schedule,
                 benchmark: Benchmark) -> tuple[str, ...]:
  """The evaluation probes `config.probes` names ('alignment' or ''), checked
  against the run.

  Raises:
    ValueError: an unknown probe; alignment on the IID stream, with fewer than 3
      tasks, or with probe_samples outside [1, samples_per_task].
  """
  names = tuple(p.strip() for p in config.get("probes", "").split(",") if p.strip())
  unknown = sorted(set(names) - set(PROBES))
  if unknown:
    raise ValueError(f"Unknown probe {', '.join(unknown)} in --config.probes; valid: "
                     f"{', '.join(PROBES)} (comma-separated; empty: none).")
  if "alignment" in names:
    if schedule.kind != "tasks":
      raise ValueError("The alignment probe compares old and arriving tasks, so it "
                       "needs the task-by-task stream (--config.stream=tasks).")
    if benchmark.num_tasks < 3:
      raise ValueError("The alignment probe needs at least 3 tasks (two old ones and "
                       f"the arriving one), got num_tasks={benchmark.num_tasks}.")
    n = config.get("probe_samples", 0)
    if not 1 <= n <= benchmark.samples_per_task:
      raise ValueError(f"probe_samples must be in [1, samples_per_task="
                       f"{benchmark.samples_per_task}], got {n}.")
  return names


def _train_compiler_options() -> Optional[dict]:
  """On CPU, LLVM's -O1 for the training programs.

  Programs compile faster and run as fast (their matmuls are library calls, the
  rest is memory-bound loops; BUILD.md has the figures). Results differ from the
  default -O3 build by float rounding only, well within the spread over seeds.
  """
  return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


def example_batch(benchmark: Benchmark, batch_size: int) -> Batch:
  """The first `batch_size` training samples of task 0, preprocessed.

  Host arrays and one compiled preprocessing call: eager `jnp` ops would each
  compile a small program at a run's start.
  """
  x = jax.jit(benchmark.preprocess)(benchmark.train_x[0, :batch_size])
  return Batch(x=x, y=np.asarray(benchmark.train_y[0, :batch_size], np.int32),
               task=np.zeros((batch_size,), np.int32),
               weight=np.ones((batch_size,), np.float32))


def _member_init(learner, members: list[dict], example: Batch):
  """(vmapped init, its host arguments): member m uses PRNGKey(seed) split into
  (init key, data key), as a single run does."""
  seeds = np.asarray([m["seed"] for m in members], np.uint32)
  sweep = {k: np.asarray([m[k] for m in members], np.float32)
           for k in members[0] if k != "seed"}

  def init_one(seed, sw):
    init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
    return learner.init(init_key, example, **sw), data_key

  return jax.vmap(init_one), (seeds, sweep)


def init_members(learner, members: list[dict], example: Batch):
  """Vmapped `learner.init` -> (state [M, ...], data_root keys [M, 2]).

  The keys are derived inside the one compiled init program.
  """
  init, args = _member_init(learner, members, example)
  # Runs once: on CPU, compile without LLVM optimisation (a quarter of the
  # compile time; the weights then differ from an optimised build in the last
  # bit, as eager `init` does, and are the same for every run).
  options = ({"xla_backend_optimization_level": 0}
             if jax.default_backend() == "cpu" else None)
  return jax.jit(init).lower(*args).compile(compiler_options=options)(*args)


def member_shapes(learner, members: list[dict], example: Batch):
  """`init_members`' output as shapes and dtypes, without compiling or running it."""
  init, args = _member_init(learner, members, example)
  return jax.eval_shape(init, *args)


@dataclasses.dataclass
class Progress:
  """Where a run stands; saved with the learner state in every checkpoint.

  acc: [M, T + 1, T] test accuracies per member; row 0 is the untrained model,
  row i + 1 is after segment (task) i (NaN while not reached, and after a
  member diverged). val_acc: the same on the validation split ([M, T + 1, 0]
  when the benchmark has none).
  task/step: next segment and step within it.
  diverged: [M] global step at which each member first went non-finite, -1 if not.
  elapsed: wall seconds spent in earlier processes of this run.
  alignment: [M, T, 4] the alignment probe's `alignment.NAMES` as task t
  arrives (NaN for t < 2, while not reached, and without the probe: [M, T, 0]).
  """
  task: int
  step: int
  acc: np.ndarray
  val_acc: np.ndarray
  diverged: np.ndarray
  elapsed: float
  alignment: np.ndarray

  @classmethod
  def start(cls, num_members: int, num_tasks: int, with_val: bool = False,
            with_alignment: bool = False) -> "Progress":
    nan = lambda cols: np.full((num_members, num_tasks + 1, cols), np.nan)
    return cls(0, 0, nan(num_tasks), nan(num_tasks if with_val else 0),
               np.full((num_members,), -1, np.int64), 0.0,
               np.full((num_members, num_tasks,
                        len(alignment.NAMES) if with_alignment else 0), np.nan))

  def to_tree(self) -> dict:
    tree = {"task": np.asarray(self.task, np.int32),
            "step": np.asarray(self.step, np.int32),
            "acc": np.asarray(self.acc, np.float64),
            "diverged": np.asarray(self.diverged, np.int64),
            "elapsed": np.asarray(self.elapsed, np.float64)}
    if self.val_acc.size:  # orbax cannot save empty arrays
      tree["val_acc"] = np.asarray(self.val_acc, np.float64)
    if self.alignment.size:
      tree["alignment"] = np.asarray(self.alignment, np.float64)
    return tree

  @classmethod
  def from_tree(cls, tree: dict) -> "Progress":
    acc = np.array(tree["acc"], np.float64)
    return cls(task=int(tree["task"]), step=int(tree["step"]), acc=acc,
               val_acc=np.array(tree.get("val_acc", np.zeros(acc.shape[:2] + (0,))),
                                np.float64),
               diverged=np.array(tree["diverged"], np.int64),
               elapsed=float(tree["elapsed"]),
               alignment=np.array(tree.get("alignment", np.zeros(
                   (acc.shape[0], acc.shape[2], 0))), np.float64))


def _divergence_message(member: dict, global_step: int, schedule,
                        method: Method) -> str:
  names = ", ".join(method.step_sizes) if method.step_sizes else "the learning rates"
  return (f"Non-finite loss, gradient, weight or learning rate at "
          f"{schedule.locate(global_step)}; {members_lib.label(member)}). Lower "
          f"{names}.")


def _matrix(acc: np.ndarray) -> list:
  return [[None if np.isnan(v) else float(v) for v in row] for row in acc]


def _summary(acc: np.ndarray, b: np.ndarray, done: int, kind: str) -> dict:
  """RA, BTI, ... of the first `done` rows; on the IID stream rows are not tasks
  learnt in order, so only RA is defined."""
  if done == 0:
    return {}
  out = metrics_lib.summarize(acc, b, num_rows=done)
  if kind == "iid":
    out = {k: (v if k == "ra" else None) for k, v in out.items()}
  return out


def _member_result(member: dict, benchmark_info: dict, progress: Progress, i: int,
                   schedule, method: Method, learner_summary: dict) -> dict:
  acc, diverged_step = progress.acc[i], int(progress.diverged[i])
  num_segments = acc.shape[1]
  done = progress.task
  if diverged_step >= 0:
    done = min(done, next(t for t in range(num_segments + 1)
                          if t == num_segments or schedule.offset(t + 1) > diverged_step))
  message = ("" if diverged_step < 0 else
             _divergence_message(member, diverged_step, schedule, method))
  result = {
      **member, "status": "diverged" if diverged_step >= 0 else (
          "complete" if progress.task == num_segments else "incomplete"),
      "message": message, "tasks_completed": done,
      "accuracy_matrix": _matrix(acc[1:]), "untrained_accuracy": acc[0].tolist(),
      **_summary(acc[1:], acc[0], done, schedule.kind)}
  if progress.val_acc.shape[2]:
    val = progress.val_acc[i]
    result["val_accuracy_matrix"] = _matrix(val[1:])
    result["val"] = _summary(val[1:], val[0], done, schedule.kind)
  if progress.alignment.shape[2]:
    # Row t (0-based) is task t + 1 arriving, numbered from 1 as in Figure 4.
    reached = [t for t in range(2, num_segments) if not np.isnan(progress.alignment[i, t, 0])]
    result["alignment"] = {"arriving_task": [t + 1 for t in reached],
                           **{k: [float(progress.alignment[i, t, j]) for t in reached]
                              for j, k in enumerate(alignment.NAMES)}}
  result.update(learner_summary)
  result["benchmark"] = benchmark_info
  return result


SUMMARY_KEYS = ("ra", "bti", "bti_official", "la", "fwt", "forgetting")


def _results(config, parts: Parts, progress: Progress, state, wall: float) -> dict:
  """results.json: the first member's fields at top level (a single-seed run's
  whole result) plus, with several members, every member and mean ± std."""
  members, schedule = parts.members, parts.schedule
  summaries = [{}] * len(members)
  if parts.learner.summary is not None:
    values = jax.device_get(jax.vmap(parts.learner.summary)(state))
    summaries = [{k: np.asarray(v[i]).tolist() for k, v in values.items()}
                 for i in range(len(members))]
  per_member = [_member_result(m, parts.benchmark_info[m["seed"]], progress, i,
                               schedule, parts.method, summaries[i])
                for i, m in enumerate(members)]
  config_json = _config_json(config)
  results = {"method": config.method, "dataset": config.dataset,
             "setting": config.setting, "stream": schedule.kind, **per_member[0],
             "wall_time_s": wall, "num_members": len(members),
             "devices": parts.placement.num_devices,
             "stream_steps": schedule.offset(progress.task) + progress.step,
             "memory_samples": int(parts.method.memory_samples(parts.hparams,
                                                               parts.context)),
             "git_commit": provenance.git_commit(),
             "config_hash": provenance.config_hash(config_json, EXECUTION_FIELDS),
             "versions": provenance.package_versions()}
  if parts.alignment is not None:
    results["probe_samples"] = config.probe_samples
  if len(members) > 1:
    results["members"] = per_member
    # Mean ± std over the seeds of each setting (one group when there is no grid).
    groups: dict = {}
    for r in per_member:
      setting = tuple((k, r[k]) for k in members[0] if k != "seed")
      groups.setdefault(setting, []).append(r)
    results["by_setting"] = []
    for setting, rs in groups.items():
      finished = [r for r in rs if r["status"] == "complete"]
      entry = {"setting": dict(setting), "seeds": [r["seed"] for r in rs],
               "mean_std_over": len(finished)}
      keys = [k for k in SUMMARY_KEYS if finished and finished[0].get(k) is not None]
      if finished:
        stats = metrics_lib.mean_std([{k: r[k] for k in keys} for r in finished])
        entry["mean_std"] = {k: list(v) for k, v in stats.items()}
      results["by_setting"].append(entry)
    if len(groups) == 1:
      results.update({k: v for k, v in results["by_setting"][0].items()
                      if k in ("mean_std", "mean_std_over")})
  return results


def _write_outputs(workdir: str, results: dict, acc: np.ndarray, title: str) -> None:
  """results.json, then plots of the members' mean accuracy matrix."""
  from lamaml_jax import plots  # pylint: disable=g-import-not-at-top  (see _run_locked)
  io_utils.atomic_write_json(os.path.join(workdir, RESULTS_FILE), results)
  done = results["tasks_completed"]
  if done > 0:
    with np.errstate(all="ignore"):
      mean = np.nanmean(acc, axis=0) if acc.shape[0] > 1 else acc[0]
    plots.plot_accuracy_matrix(mean[1:], os.path.join(workdir, "accuracy_matrix.png"),
                               title)
    plots.plot_task_accuracies(mean[1:], os.path.join(workdir, "task_accuracies.png"),
                               title, b=mean[0])


def _trim_metrics_log(path: str, global_step: int) -> None:
  """Drops log records written after the checkpoint a run resumes from."""
  if os.path.exists(path):
    kept = [r for r in io_utils.read_jsonl(path) if r.get("global_step", 0) <= global_step]
    io_utils.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def run(config: ml_collections.ConfigDict, workdir: str, *,
        data_dir: Optional[str] = None, overwrite: bool = False,
        timeline: timeline_lib.Timeline = timeline_lib.NO_TIMELINE) -> dict:
  """Trains `config` on its benchmark, writing everything under `workdir`.

  `timeline` records the wall time of the run's phases (benchmarks/run_timeline.py).

  Returns:
    The results dict also written to `workdir/results.json`.

  Raises:
    DivergenceError: every member hit non-finite values; the last good checkpoint
      is kept and results.json is written with status 'diverged' and the finished
      rows. (With several members, a diverged member is marked and the rest go on.)
    WorkdirConflictError, checkpointing.CheckpointError, ValueError: see messages.
  """
  start_time = time.time()
  with timeline.span("validate"):
    check_execution_settings(config)
    validate_config(config, data_dir)
    check_workdir(config, workdir, overwrite)
  with timeline.span("build"):
    parts = build(config, data_dir)  # validates everything and loads the data
  # With several processes, the primary alone locks and prepares the workdir;
  # the others wait for it before reading its checkpoints.
  primary = distributed.is_primary()
  with (io_utils.WorkdirLock(workdir) if primary else contextlib.nullcontext()), \
      _StopRequests() as stop:
    with timeline.span("prepare_workdir"):
      if primary:
        prepare_workdir(config, workdir, overwrite)
      distributed.barrier("lamaml_jax.train.prepare_workdir")
    return _run_locked(config, workdir, parts, start_time, stop, timeline)


def _run_locked(config: ml_collections.ConfigDict, workdir: str, parts: Parts,
                start_time: float, stop: _StopRequests,
                timeline: timeline_lib.Timeline) -> dict:
  """`run` once its workdir is prepared and locked."""
  members, schedule, learner = parts.members, parts.schedule, parts.learner
  # The programs run `place.padded` members (copies of the last one pad M to a
  # multiple of the devices); what reaches the host is `place.unpad`ded, and
  # checkpoints hold the M real members, so a run resumes on any device count.
  place = parts.placement
  padded = place.pad(members)
  # This process's members (all of them on one process) and their benchmarks.
  local = [padded[i] for i in place.local_members]
  member_benchmarks = [parts.benchmarks[m["seed"]] for m in local]
  benchmark = member_benchmarks[0]
  num_members, num_segments = len(members), schedule.num_segments
  primary = distributed.is_primary()
  with_val = all(b.val_x is not None for b in member_benchmarks)
  with_alignment = parts.alignment is not None
  seeds = sorted({m["seed"] for m in members})
  title = (f"{config.method} on {config.dataset} ({config.setting}, seed"
           f"{'s ' + ','.join(map(str, seeds)) if len(seeds) > 1 else ' ' + str(seeds[0])}"
           f"{', %d members' % num_members if num_members > len(seeds) else ''})")

  lengths = program_length.ProgramLength(config.steps_per_program,
                                         config.max_program_seconds)

  def segment_data(t: int):
    """Segment t's training inputs, labels and task ids of this process's
    members (host)."""
    data = [schedule.data(b, t) for b in member_benchmarks]
    return tuple(members_lib.stack([d[i] for d in data]) for i in range(3))

  # The task program is lowered here and compiles in the background while the
  # model is initialised and evaluated (BUILD.md has the measured gain).
  programs = task_program.CompiledAhead(parts.train, timeline)
  with timeline.span("trace_train_program"):
    example = example_batch(benchmark, config.batch_size)
    state_shape, root_shape = place.abstract(member_shapes(learner, padded, example))
    scalar = place.abstract(jax.ShapeDtypeStruct((), jnp.int32), shared=True)
    local_shape = lambda a: jax.ShapeDtypeStruct((place.padded, *a.shape[1:]), a.dtype)
    programs.compile_ahead(
        state_shape, *place.abstract([local_shape(a) for a in segment_data(0)]), scalar,
        root_shape, scalar, scalar, num_steps=lengths.capacity(schedule.steps(0)))
  with timeline.span("init_members"):
    state, data_roots = place.put_local(init_members(learner, local, example))
  # Evaluation and probe data: one copy per seed and device, read by every member
  # of that seed (a grid's settings) through member_data.
  with timeline.span("place_eval_data"):
    tables, index = place.blocks([m["seed"] for m in padded])
    per_seed = lambda f: place.put_blocks(
        tables, lambda seeds: members_lib.stack([f(parts.benchmarks[s]) for s in seeds]))
    member_data = place.put(index)
    eval_sets = [(per_seed(lambda b: b.test_x), per_seed(lambda b: b.test_y))]
    if with_val:
      eval_sets.append((per_seed(lambda b: b.val_x), per_seed(lambda b: b.val_y)))
    if with_alignment:
      n = config.probe_samples
      probe_data = (per_seed(lambda b: b.train_x[:, :n]),
                    per_seed(lambda b: b.train_y[:, :n]))

  def accuracy(state, seen: int) -> list[np.ndarray]:
    """[M, T] test accuracies (and validation accuracies, if any) after `seen`
    segments; the IID stream has seen every task's classes from the start."""
    with timeline.span("evaluate"):
      seen = place.shared(np.int32(num_segments if schedule.kind == "iid" else seen))
      return [place.unpad(np.asarray(place.fetch(
          parts.evaluate(state, x, y, member_data, seen)))) / y.shape[2]
              for x, y in eval_sets]

  def probe_alignment(state, t: int) -> None:
    """Fills progress.alignment[:, t] and logs it, as task t arrives."""
    with timeline.span("alignment_probe"):
      out = place.unpad(place.fetch(parts.alignment(
          state, *probe_data, member_data, place.shared(np.int32(t)))))
    values = np.stack([np.asarray(out[k], np.float64) for k in alignment.NAMES], -1)
    values[progress.diverged >= 0] = np.nan
    progress.alignment[:, t] = values
    alive = progress.diverged < 0
    scalars = {k: float(np.mean(values[alive, i])) for i, k in enumerate(alignment.NAMES)}
    record = {"global_step": global_step(), "task": t, "probe": "alignment", **scalars}
    if num_members > 1:
      record["alignment_per_member"] = values.tolist()
    log.write(record)
    tb.scalars({f"alignment/{k}": v for k, v in scalars.items()}, global_step())

  with timeline.span("open_checkpoints"):
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR),
                                      config.keep_checkpoints)
    newest_step = ckpt.latest_step()
  metrics_path = os.path.join(workdir, METRICS_FILE)
  latest = None
  newest = distributed.agree([-1 if newest_step is None else newest_step])
  if len(set(newest[:, 0].tolist())) > 1:
    raise ValueError(
        f"The processes see different checkpoints in {workdir} (newest step per "
        f"process: {newest[:, 0].tolist()}, -1: none): a run over several processes "
        "needs its --workdir on a file system that all of them share.")
  if newest_step is not None:
    template = {"state": place.gather(state),
                "progress": Progress.start(num_members, num_segments, with_val,
                                           with_alignment).to_tree()}
    with timeline.span("restore_checkpoint"):
      latest, restored = ckpt.restore(template)  # the newest that verifies
    state = place.put(place.pad_tree(restored["state"]))
    progress = Progress.from_tree(restored["progress"])
    logging.info("Resumed %s from checkpoint %d (task %d, step %d).", workdir,
                 latest, progress.task, progress.step)
  else:
    progress = Progress.start(num_members, num_segments, with_val, with_alignment)
    rows = accuracy(state, 0)
    progress.acc[:, 0] = rows[0]
    if with_val:
      progress.val_acc[:, 0] = rows[1]

  def wall() -> float:
    return progress.elapsed + time.time() - start_time

  def global_step() -> int:
    return schedule.offset(progress.task) + progress.step

  def save():
    with timeline.span("save_checkpoint"):
      tree = dataclasses.replace(progress, elapsed=wall()).to_tree()
      ckpt.save(global_step(), {"state": place.gather(state), "progress": tree})

  def results():
    with timeline.span("results"):
      return _results(config, parts, progress, place.gather(state), wall())

  def interrupted(t: int):
    """Stops after a checkpoint of task t (0-based), step progress.step."""
    log.flush()
    raise Interrupted(
        f"Interrupted by {signal.Signals(stop.signum).name} at task {t + 1} step "
        f"{progress.step} (checkpoint {global_step()} written); rerun the same "
        "command to resume.", stop.signum)

  # Records and events past the checkpoint resumed from (all of them when there is
  # none: a process killed before its first checkpoint) are written again below;
  # those at its step were written before it was saved and stay. TensorBoard hides
  # an earlier file's events at or after the purge step.
  resume_step = -1 if latest is None else latest
  if primary:
    _trim_metrics_log(metrics_path, resume_step)
  task_started = time.time()

  last_save = time.time()

  def save_due() -> bool:
    return time.time() - last_save >= 60 * config.checkpoint_every_minutes

  def save_or_stop(due: bool) -> tuple[bool, bool]:
    """(checkpoint now, stop after it): the primary's clock decides the first,
    a signal to any process the second, so that all processes agree."""
    # Only the agreed values count: a signal that arrives during the collective
    # is acted on at the next decision, by every process together.
    rows = distributed.agree([due, stop.signum or 0])
    signum = int(rows[:, 1].max())
    if signum and stop.signum is None:
      stop.signum = signum  # another process was signalled
    return bool(rows[0, 0]) or bool(signum), bool(signum)

  def next_length(step: int, steps: int) -> int:
    """The next program's steps; the primary's measurements decide."""
    return int(distributed.agree([lengths.next(step, steps)])[0, 0])

  loaded = (None, None)  # (data index, device arrays) of the segment's data
  # What only checkpoints and the end of the run need (orbax, then matplotlib:
  # half a second), loaded while the host would otherwise be idle.
  to_load = [ckpt.open, functools.partial(importlib.import_module, "lamaml_jax.plots")]

  def load_meanwhile(phase: str, still_idle: Callable[[], bool] = lambda: True):
    with timeline.span(phase):
      while to_load and still_idle():
        to_load.pop(0)()

  # Leaving the block, normally or not, waits for a checkpoint still being written.
  with programs, ckpt, \
      (io_utils.JsonlWriter(metrics_path) if primary else io_utils.Discard()) as log, \
      (summary_writer.SummaryWriter(os.path.join(workdir, "tensorboard"),
                                    purge_step=resume_step + 1)
       if primary else io_utils.Discard()) as tb:
    first_task = progress.task
    for t in range(progress.task, num_segments):
      if loaded[0] != schedule.data_index(t):  # IID: every segment reads all data
        with timeline.span("segment_data"):
          loaded = (schedule.data_index(t), place.put_local(segment_data(t)))
      x, y, sample_task = loaded[1]
      stream_id = place.shared(np.int32(schedule.stream_id(t)))
      steps = schedule.steps(t)
      while progress.step < steps:
        n = next_length(progress.step, steps)
        start = schedule.first_step(t) + progress.step
        args = (state, x, y, sample_task, stream_id, data_roots,
                place.shared(np.int32(start)), place.shared(np.int32(n)))
        capacity = lengths.capacity(steps)
        if to_load and programs.compiling(capacity):  # else the host would only wait
          load_meanwhile("load_while_compiling", lambda: programs.compiling(capacity))
        program = programs.executable(*args, num_steps=capacity)
        began = time.perf_counter()
        state, m = program(*args)
        if to_load and n > 1:  # a program that runs long enough (not the probe):
          load_meanwhile("load_beside_program")  # dispatched, it needs no host thread
        m = {k: v[:, :n] for k, v in place.unpad(place.fetch(m)).items()}
        lengths.measured(n, time.perf_counter() - began)
        timeline.add("train_program", time.perf_counter() - began, began)
        newly = (~m[FINITE].all(axis=1)) & (progress.diverged < 0)
        for i in np.flatnonzero(newly):
          progress.diverged[i] = global_step() + int(np.argmin(m[FINITE][i]))
          logging.warning("%s", _divergence_message(
              members[i], int(progress.diverged[i]), schedule, parts.method))
        if np.all(progress.diverged >= 0):
          out = results()
          if primary:
            _write_outputs(workdir, out, progress.acc, title)
          raise DivergenceError(
              out["message"] + " The run stopped; the last good checkpoint is kept and "
              "results.json holds the finished tasks.")
        progress.step += n
        alive = progress.diverged < 0
        record = {"global_step": global_step(), "task": t,
                  "epoch": (start + n - 1) // schedule.spec.steps_per_epoch}
        scalars = {k: float(np.mean(v[alive])) for k, v in m.items() if k != FINITE}
        record.update(scalars)
        if num_members > 1:
          record["loss_per_member"] = np.mean(m["loss"], axis=1).tolist()
        log.write(record)
        tb.scalars({f"train/{k}": v for k, v in scalars.items()}, global_step())
        if progress.step < steps:
          checkpoint, stopping = save_or_stop(save_due())
          if checkpoint:
            tb.flush()
            save()
            last_save = time.time()
          if stopping:
            interrupted(t)
      if parts.end_task is not None:
        with timeline.span("end_task"):  # dispatched: evaluate waits for it
          state = parts.end_task(state, x, y, place.shared(np.int32(t)))
      rows = accuracy(state, t + 1)
      for r in rows:
        r[progress.diverged >= 0] = np.nan
      progress.acc[:, t + 1] = rows[0]
      if with_val:
        progress.val_acc[:, t + 1] = rows[1]
      progress.task, progress.step = t + 1, 0
      seen = float(np.nanmean(rows[0][:, :t + 1]))
      record = {"global_step": global_step(), "task": t,
                "eval_accuracy": rows[0][0].tolist(), "mean_seen_accuracy": seen}
      if with_val:
        record["val_accuracy"] = rows[1][0].tolist()
      if num_members > 1:
        record["eval_accuracy_per_member"] = rows[0].tolist()
      log.write(record)
      tb.scalars({"eval/mean_seen_accuracy": seen, "eval/mean_all_accuracy":
                  float(np.nanmean(rows[0]))}, global_step())
      if with_val:
        tb.scalars({"val/mean_all_accuracy": float(np.nanmean(rows[1]))}, global_step())
      if with_alignment and 2 <= t + 1 < num_segments:
        # Task t + 1 arrives: covered by the checkpoint below with this row.
        probe_alignment(state, t + 1)
      tb.flush()
      checkpoint, stopping = save_or_stop(save_due())
      if t == num_segments - 1 or checkpoint:
        save()
        last_save = time.time()
      if stopping and t < num_segments - 1:
        interrupted(t + 1)
      # The last segment's duration predicts the rest; the first of a process
      # also compiles the programs, so it predicts nothing.
      if t > first_task:
        eta = f"ETA {(time.time() - task_started) * (num_segments - t - 1):.0f} s"
      else:
        eta = f"ETA after task {t + 2}" if t < num_segments - 1 else "ETA 0 s"
      task_started = time.time()
      logging.info("task %d/%d | seen-task accuracy %.4f | %.1f s | %s",
                   t + 1, num_segments, seen, wall(), eta)

  out = results()
  if primary:
    with timeline.span("write_outputs"):
      _write_outputs(workdir, out, progress.acc, title)
  for r in out.get("members", [out]):
    if "ra" in r:
      logging.info("%s%s: %s", title,
                   f" [{members_lib.label({k: r[k] for k in members[0]})}]"
                   if num_members > 1 else "",
                   ", ".join(f"{k.upper()} {r[k]:.4f}" for k in SUMMARY_KEYS
                             if r.get(k) is not None))
  for group in out.get("by_setting", []):
    if "mean_std" in group:
      name = ", ".join(f"{k}={v:g}" for k, v in group["setting"].items()) or "all"
      logging.info("%s: mean ± std over %d seeds: %s", name, group["mean_std_over"],
                   ", ".join(f"{k.upper()} {v[0]:.4f} ± {v[1]:.4f}"
                             for k, v in group["mean_std"].items()))
  logging.info("%s finished in %.1f s.", title, out["wall_time_s"])
  return out
