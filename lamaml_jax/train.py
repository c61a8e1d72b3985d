"""The one impure loop: tasks in order, compiled training programs, evaluation,
logs, checkpoints and results.

  run(config, workdir) -> results dict

Per task t: its data move to the device once; the training program runs all its
steps (or chunks of `config.steps_per_program` steps); the evaluation program fills
row t of the accuracy matrix. After a chunk or a task a checkpoint is written once
`config.checkpoint_every_minutes` have passed since the last one (0: every time),
and always after the last task: each write costs about 40 ms of CPU, and writing
after every task made a 20-task MNIST run 0.6-1.7 s (4-10%) slower. Re-running with the
same workdir resumes from the newest checkpoint and gives bit-identical results on
the same machine (all stream randomness is a function of seed, task and step).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import lamaml_jax
from lamaml_jax import checkpointing
from lamaml_jax import io_utils
from lamaml_jax import members as members_lib
from lamaml_jax import metrics as metrics_lib
from lamaml_jax import networks
from lamaml_jax import plots
from lamaml_jax import summary_writer
from lamaml_jax import task_program
from lamaml_jax.data import make_benchmark
from lamaml_jax.data.benchmark import Benchmark
from lamaml_jax.learners import make_learner, sweepable
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


class WorkdirConflictError(ValueError):
  """The workdir holds a run of a different configuration."""


# Fields that change how a run is executed, not what it computes: a run may resume
# with other values.
EXECUTION_FIELDS = ("steps_per_program", "checkpoint_every_minutes", "keep_checkpoints",
                    "eval_batch_size", "member_batching")


def _config_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def check_execution_settings(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError (before anything is written) for invalid EXECUTION_FIELDS."""
  if not config.steps_per_program >= 0:
    raise ValueError(f"steps_per_program must be >= 0 (0: a whole task per program), "
                     f"got {config.steps_per_program}.")
  if not 0 <= config.checkpoint_every_minutes < float("inf"):
    raise ValueError("checkpoint_every_minutes must be a finite number >= 0 (0: a "
                     f"checkpoint after every program), got {config.checkpoint_every_minutes}.")
  if not config.keep_checkpoints >= 1:
    raise ValueError(f"keep_checkpoints must be >= 1, got {config.keep_checkpoints}.")


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str,
                    overwrite: bool) -> None:
  """Creates `workdir`; refuses one that holds a run of a different config."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  wanted = _config_json(config)
  if os.path.exists(path):
    with open(path) as f:
      found = json.load(f)
    diff = sorted(k for k in set(found) | set(wanted)
                  if found.get(k) != wanted.get(k) and k not in EXECUTION_FIELDS)
    if diff:
      if not overwrite:
        raise WorkdirConflictError(
            f"{workdir} holds a run of a different config (differs in: "
            f"{', '.join(diff)}). Use another --workdir, or pass --overwrite to "
            "delete that run and start this one.")
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
  io_utils.atomic_write_json(path, wanted)


def build(config: ml_collections.ConfigDict, data_dir: Optional[str] = None):
  """Members, their benchmarks (by seed), learner, stream spec and compiled programs.

  Returns:
    (members, {seed: Benchmark}, learner, spec, train, evaluate); the programs map
    over the member axis (`task_program.over_members`: vmap, or lax.map on CPU).
  """
  grid = members_lib.parse_grid(config.grid, sweepable(config.method))
  members = members_lib.make_members(config.seed, config.num_seeds, grid)
  benchmarks = {}
  for seed in sorted({m["seed"] for m in members}):
    benchmarks[seed] = make_benchmark(
        config.dataset, seed=seed, data_dir=data_dir,
        num_tasks=config.num_tasks, samples_per_task=config.samples_per_task)
  benchmark = benchmarks[members[0]["seed"]]
  network = networks.make_network(config.arch, benchmark.num_outputs)
  learner = make_learner(config.method, config.learner.to_dict(), network,
                         benchmark.classes_per_task)
  spec = task_program.StreamSpec(benchmark.samples_per_task, config.batch_size,
                                 config.epochs)
  augment = benchmark.augment if config.augment else None
  batching = config.member_batching
  if batching == "auto":
    batching = "map" if jax.default_backend() == "cpu" else "vmap"
  train = task_program.make_train_program(learner, spec, benchmark.preprocess, augment,
                                          batching, _train_compiler_options())
  evaluate = task_program.make_eval_program(learner, benchmark.preprocess,
                                            config.eval_batch_size, batching)
  return members, benchmarks, learner, spec, train, evaluate


def _train_compiler_options() -> Optional[dict]:
  """On CPU, LLVM's -O1 for the training programs.

  Measured on 2 AMD EPYC cores (jax 0.10.2): the MNIST La-MAML task program
  compiled in 2.3 s instead of 2.8 s, a CIFAR second-order one in 5.2 s instead of
  5.8 s, and both ran as fast (their matmuls are library calls, the rest is
  memory-bound loops). Results differ from the default -O3 build by float rounding
  only (the default mnist5k_rotations run: RA 0.7407 against 0.7455, well within
  the spread over seeds).
  """
  return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


def example_batch(benchmark: Benchmark, batch_size: int) -> Batch:
  """The first `batch_size` training samples of task 0, preprocessed.

  Host arrays and one compiled preprocessing call: eager `jnp` ops would each
  compile a small program (about 0.1 s of a run's start).
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
  # Runs once: on CPU, compile without LLVM optimisation (0.3 s instead of 1.2 s
  # for the MNIST MLP; the weights then differ from an optimised build in the
  # last bit, as eager `init` does, and are the same for every run).
  options = ({"xla_backend_optimization_level": 0}
             if jax.default_backend() == "cpu" else None)
  return jax.jit(init).lower(*args).compile(compiler_options=options)(*args)


def member_shapes(learner, members: list[dict], example: Batch):
  """`init_members`' output as shapes and dtypes, without compiling or running it."""
  init, args = _member_init(learner, members, example)
  return jax.eval_shape(init, *args)


def package_versions() -> dict[str, str]:
  import flax, optax, orbax.checkpoint  # pylint: disable=g-import-not-at-top,multiple-imports
  return {"lamaml_jax": lamaml_jax.__version__, "jax": jax.__version__,
          "jaxlib": jax.lib.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "orbax-checkpoint": orbax.checkpoint.__version__,
          "numpy": np.__version__, "backend": jax.default_backend()}


@dataclasses.dataclass
class Progress:
  """Where a run stands; saved with the learner state in every checkpoint.

  acc: [M, T + 1, T] accuracies per member; row 0 is the untrained model, row
  i + 1 is after task i (NaN while not reached, and after a member diverged).
  task/step: next task and step within it.
  diverged: [M] global step at which each member first went non-finite, -1 if not.
  elapsed: wall seconds spent in earlier processes of this run.
  """
  task: int
  step: int
  acc: np.ndarray
  diverged: np.ndarray
  elapsed: float

  @classmethod
  def start(cls, num_members: int, num_tasks: int) -> "Progress":
    return cls(0, 0, np.full((num_members, num_tasks + 1, num_tasks), np.nan),
               np.full((num_members,), -1, np.int64), 0.0)

  def to_tree(self) -> dict:
    return {"task": np.asarray(self.task, np.int32),
            "step": np.asarray(self.step, np.int32),
            "acc": np.asarray(self.acc, np.float64),
            "diverged": np.asarray(self.diverged, np.int64),
            "elapsed": np.asarray(self.elapsed, np.float64)}

  @classmethod
  def from_tree(cls, tree: dict) -> "Progress":
    return cls(task=int(tree["task"]), step=int(tree["step"]),
               acc=np.array(tree["acc"], np.float64),
               diverged=np.array(tree["diverged"], np.int64),
               elapsed=float(tree["elapsed"]))


def _divergence_message(member: dict, global_step: int, steps: int,
                        steps_per_epoch: int) -> str:
  task, step = divmod(global_step, steps)
  epoch, batch = divmod(step, steps_per_epoch)
  return (f"Non-finite loss, gradient, weight or learning rate at task {task}, "
          f"epoch {epoch}, step {batch} (step {step} of the task; "
          f"{members_lib.label(member)}). Lower the learning rates (alpha_init, "
          "opt_lr, opt_wt) or grad_clip_norm.")


def _member_result(member: dict, benchmark: Benchmark, acc: np.ndarray,
                   diverged_step: int, progress: Progress, steps: int,
                   meta_updates: int, message: str) -> dict:
  done = progress.task if diverged_step < 0 else diverged_step // steps
  summary = metrics_lib.summarize(acc[1:], acc[0], num_rows=done) if done > 0 else {}
  return {
      **member, "status": "diverged" if diverged_step >= 0 else (
          "complete" if progress.task == acc.shape[1] else "incomplete"),
      "message": message, "tasks_completed": done,
      "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in row]
                          for row in acc[1:]],
      "untrained_accuracy": acc[0].tolist(), **summary,
      "meta_updates": meta_updates, "benchmark": benchmark.info}


def _results(config, members, benchmarks, progress: Progress, state, steps: int,
             steps_per_epoch: int, wall: float) -> dict:
  """results.json: the first member's fields at top level (a single-seed run's
  whole result) plus, with several members, every member and mean ± std."""
  meta_updates = np.asarray(jax.device_get(state.step)).tolist()
  per_member = []
  for i, m in enumerate(members):
    d = int(progress.diverged[i])
    message = "" if d < 0 else _divergence_message(m, d, steps, steps_per_epoch)
    per_member.append(_member_result(m, benchmarks[m["seed"]], progress.acc[i], d,
                                     progress, steps, int(meta_updates[i]), message))
  results = {"method": config.method, "dataset": config.dataset,
             "setting": config.setting, **per_member[0], "wall_time_s": wall,
             "num_members": len(members), "versions": package_versions()}
  if len(members) > 1:
    results["members"] = per_member
    # Mean ± std over the seeds of each setting (one group when there is no grid).
    groups: dict = {}
    for r in per_member:
      setting = tuple((k, r[k]) for k in members[0] if k != "seed")
      groups.setdefault(setting, []).append(r)
    keys = ("ra", "bti", "bti_official", "la", "fwt")
    results["by_setting"] = []
    for setting, rs in groups.items():
      finished = [r for r in rs if r["status"] == "complete"]
      entry = {"setting": dict(setting), "seeds": [r["seed"] for r in rs],
               "mean_std_over": len(finished)}
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
        data_dir: Optional[str] = None, overwrite: bool = False) -> dict:
  """Trains `config` on its benchmark, writing everything under `workdir`.

  Returns:
    The results dict also written to `workdir/results.json`.

  Raises:
    DivergenceError: every member hit non-finite values; the last good checkpoint
      is kept and results.json is written with status 'diverged' and the finished
      rows. (With several members, a diverged member is marked and the rest go on.)
    WorkdirConflictError, checkpointing.CheckpointError, ValueError: see messages.
  """
  start_time = time.time()
  check_execution_settings(config)
  prepare_workdir(config, workdir, overwrite)
  members, benchmarks, learner, spec, train, evaluate = build(config, data_dir)
  member_benchmarks = [benchmarks[m["seed"]] for m in members]
  benchmark = member_benchmarks[0]
  num_members, num_tasks, steps = len(members), benchmark.num_tasks, spec.steps_per_task
  chunk = config.steps_per_program or steps
  seeds = sorted({m["seed"] for m in members})
  title = (f"{config.method} on {config.dataset} ({config.setting}, seed"
           f"{'s ' + ','.join(map(str, seeds)) if len(seeds) > 1 else ' ' + str(seeds[0])}"
           f"{', %d members' % num_members if num_members > len(seeds) else ''})")

  def task_data(t: int):
    """Task t's training inputs and labels of every member, on the host."""
    return (members_lib.stack([b.train_x[t] for b in member_benchmarks]),
            members_lib.stack([b.train_y[t] for b in member_benchmarks]))

  # The task program is lowered here and compiles in the background (2.5 s for
  # MNIST La-MAML on two CPU cores) while the model is initialised and evaluated:
  # about 0.3-0.4 s off a cold run (1-task MNIST runs 4.33 against 4.61 s, 20-task
  # runs 16.7 against 17.1 s, medians of 6 and 5 alternating cold processes).
  example = example_batch(benchmark, config.batch_size)
  state_shape, root_shape = member_shapes(learner, members, example)
  scalar = jax.ShapeDtypeStruct((), jnp.int32)
  programs = task_program.CompiledAhead(train)
  programs.compile_ahead(state_shape, *task_data(0), scalar, root_shape, scalar,
                         num_steps=chunk)
  state, data_roots = init_members(learner, members, example)
  test_x = jax.device_put(members_lib.stack([b.test_x for b in member_benchmarks]))
  test_y = jax.device_put(members_lib.stack([b.test_y for b in member_benchmarks]))

  def accuracy(state) -> np.ndarray:
    return np.asarray(jax.device_get(evaluate(state, test_x, test_y))) / test_y.shape[2]

  ckpt = checkpointing.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR),
                                    config.keep_checkpoints)
  metrics_path = os.path.join(workdir, METRICS_FILE)
  latest = ckpt.latest_step()
  if latest is not None:
    template = {"state": state,
                "progress": Progress.start(num_members, num_tasks).to_tree()}
    restored = ckpt.restore(template)
    state, progress = restored["state"], Progress.from_tree(restored["progress"])
    logging.info("Resumed %s from checkpoint %d (task %d, step %d).", workdir,
                 latest, progress.task, progress.step)
  else:
    progress = Progress.start(num_members, num_tasks)
    progress.acc[:, 0] = accuracy(state)

  def wall() -> float:
    return progress.elapsed + time.time() - start_time

  def save():
    tree = dataclasses.replace(progress, elapsed=wall()).to_tree()
    ckpt.save(progress.task * steps + progress.step, {"state": state, "progress": tree})

  def results():
    return _results(config, members, benchmarks, progress, state, steps,
                    spec.steps_per_epoch, wall())

  # Records and events past the checkpoint resumed from (all of them when there is
  # none: a process killed before its first checkpoint) are written again below.
  resume_step = latest or 0
  _trim_metrics_log(metrics_path, resume_step)
  task_started = time.time()

  last_save = time.time()

  def save_due() -> bool:
    return time.time() - last_save >= 60 * config.checkpoint_every_minutes

  # Leaving the block, normally or not, waits for a checkpoint still being written.
  with programs, ckpt, io_utils.JsonlWriter(metrics_path) as log, \
      summary_writer.SummaryWriter(os.path.join(workdir, "tensorboard"),
                                   purge_step=resume_step) as tb:
    first_task = progress.task
    for t in range(progress.task, num_tasks):
      task_x, task_y = jax.device_put(task_data(t))
      task_id = jax.device_put(np.int32(t))
      while progress.step < steps:
        n = min(chunk, steps - progress.step)
        state, m = programs(state, task_x, task_y, task_id, data_roots,
                            jax.device_put(np.int32(progress.step)), num_steps=n)
        m = jax.device_get(m)
        newly = (~m["finite"].all(axis=1)) & (progress.diverged < 0)
        for i in np.flatnonzero(newly):
          progress.diverged[i] = t * steps + progress.step + int(np.argmin(m["finite"][i]))
          logging.warning("%s", _divergence_message(
              members[i], int(progress.diverged[i]), steps, spec.steps_per_epoch))
        if np.all(progress.diverged >= 0):
          out = results()
          _write_outputs(workdir, out, progress.acc, title)
          raise DivergenceError(
              out["message"] + " The run stopped; the last good checkpoint is kept and "
              "results.json holds the finished tasks.")
        progress.step += n
        global_step = t * steps + progress.step
        alive = progress.diverged < 0
        record = {"global_step": global_step, "task": t,
                  "epoch": (progress.step - 1) // spec.steps_per_epoch,
                  "loss": float(np.mean(m["loss"][alive])),
                  "inner_loss": float(np.mean(m["inner_loss"][alive]))}
        if num_members > 1:
          record["loss_per_member"] = np.mean(m["loss"], axis=1).tolist()
        log.write(record)
        tb.scalars({"train/loss": record["loss"],
                    "train/inner_loss": record["inner_loss"]}, global_step)
        if progress.step < steps and save_due():
          tb.flush()
          save()
          last_save = time.time()
      rows = accuracy(state)
      rows[progress.diverged >= 0] = np.nan
      progress.acc[:, t + 1] = rows
      progress.task, progress.step = t + 1, 0
      seen = float(np.nanmean(rows[:, :t + 1]))
      record = {"global_step": (t + 1) * steps, "task": t,
                "eval_accuracy": rows[0].tolist(), "mean_seen_accuracy": seen}
      if num_members > 1:
        record["eval_accuracy_per_member"] = rows.tolist()
      log.write(record)
      tb.scalars({"eval/mean_seen_accuracy": seen, "eval/mean_all_accuracy":
                  float(np.nanmean(rows))}, (t + 1) * steps)
      tb.flush()
      if t == num_tasks - 1 or save_due():
        save()
        last_save = time.time()
      # The last task's duration predicts the rest; the first task of a process
      # also compiles the programs, so it predicts nothing.
      if t > first_task:
        eta = f"ETA {(time.time() - task_started) * (num_tasks - t - 1):.0f} s"
      else:
        eta = f"ETA after task {t + 2}" if t < num_tasks - 1 else "ETA 0 s"
      task_started = time.time()
      logging.info("task %d/%d | seen-task accuracy %.4f | %.1f s | %s",
                   t + 1, num_tasks, seen, wall(), eta)

  out = results()
  _write_outputs(workdir, out, progress.acc, title)
  for r in out.get("members", [out]):
    if "ra" in r:
      logging.info("%s%s: RA %.4f, BTI %.4f, LA %.4f, FWT %.4f", title,
                   f" [{members_lib.label({k: r[k] for k in members[0]})}]"
                   if num_members > 1 else "", r["ra"], r["bti"], r["la"], r["fwt"])
  for group in out.get("by_setting", []):
    if "mean_std" in group:
      name = ", ".join(f"{k}={v:g}" for k, v in group["setting"].items()) or "all"
      logging.info("%s: mean ± std over %d seeds: %s", name, group["mean_std_over"],
                   ", ".join(f"{k.upper()} {v[0]:.4f} ± {v[1]:.4f}"
                             for k, v in group["mean_std"].items()))
  logging.info("%s finished in %.1f s.", title, out["wall_time_s"])
  return out
