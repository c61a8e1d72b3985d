"""The one impure loop: tasks in order, compiled training programs, evaluation,
logs, checkpoints and results.

  run(config, workdir) -> results dict

Per task t: its data move to the device once; the training program runs all its
steps (or chunks of `config.steps_per_program` steps, between which a checkpoint
may be written every `config.checkpoint_every_minutes`); the evaluation program
fills row t of the accuracy matrix; a checkpoint is written. Re-running with the
same workdir resumes from the newest checkpoint and gives bit-identical results on
the same machine (all stream randomness is a function of seed, task and step).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import lamaml_jax
from lamaml_jax import checkpointing
from lamaml_jax import io_utils
from lamaml_jax import metrics as metrics_lib
from lamaml_jax import networks
from lamaml_jax import plots
from lamaml_jax import summary_writer
from lamaml_jax import task_program
from lamaml_jax.data import make_benchmark
from lamaml_jax.data.benchmark import Benchmark
from lamaml_jax.learners import make_learner
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
                    "eval_batch_size")


def _config_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


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
  """Benchmark, learner, stream spec and compiled programs of a config."""
  benchmark = make_benchmark(
      config.dataset, seed=config.seed, data_dir=data_dir,
      num_tasks=config.num_tasks, samples_per_task=config.samples_per_task)
  network = networks.make_network(config.arch, benchmark.num_outputs)
  learner = make_learner(config.method, config.learner.to_dict(), network,
                         benchmark.classes_per_task)
  spec = task_program.StreamSpec(benchmark.samples_per_task, config.batch_size,
                                 config.epochs)
  augment = benchmark.augment if config.augment else None
  train = task_program.make_train_program(learner, spec, benchmark.preprocess, augment)
  evaluate = task_program.make_eval_program(learner, benchmark.preprocess,
                                            config.eval_batch_size)
  return benchmark, learner, spec, train, evaluate


def example_batch(benchmark: Benchmark, batch_size: int) -> Batch:
  x = benchmark.preprocess(jnp.asarray(benchmark.train_x[0, :batch_size]))
  return Batch(x=x, y=jnp.asarray(benchmark.train_y[0, :batch_size], jnp.int32),
               task=jnp.zeros((batch_size,), jnp.int32),
               weight=jnp.ones((batch_size,), jnp.float32))


def package_versions() -> dict[str, str]:
  import flax, optax, orbax.checkpoint  # pylint: disable=g-import-not-at-top,multiple-imports
  return {"lamaml_jax": lamaml_jax.__version__, "jax": jax.__version__,
          "jaxlib": jax.lib.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "orbax-checkpoint": orbax.checkpoint.__version__,
          "numpy": np.__version__, "backend": jax.default_backend()}


@dataclasses.dataclass
class Progress:
  """Where a run stands; saved with the learner state in every checkpoint.

  acc: [T + 1, T] accuracies; row 0 is the untrained model, row i + 1 is after task
  i (NaN while not reached). task/step: next task and step within it.
  elapsed: wall seconds spent in earlier processes of this run.
  """
  task: int
  step: int
  acc: np.ndarray
  elapsed: float

  def to_tree(self) -> dict:
    return {"task": jnp.asarray(self.task, jnp.int32),
            "step": jnp.asarray(self.step, jnp.int32),
            "acc": np.asarray(self.acc, np.float64),
            "elapsed": jnp.asarray(self.elapsed, jnp.float64
                                   if jax.config.jax_enable_x64 else jnp.float32)}

  @classmethod
  def from_tree(cls, tree: dict) -> "Progress":
    return cls(task=int(tree["task"]), step=int(tree["step"]),
               acc=np.array(tree["acc"], np.float64), elapsed=float(tree["elapsed"]))


def _results(config, benchmark, progress: Progress, state, wall: float,
             status: str, message: str = "") -> dict:
  done = progress.task
  matrix = progress.acc[1:]
  summary = (metrics_lib.summarize(matrix, progress.acc[0], num_rows=done)
             if done > 0 else {})
  return {
      "method": config.method, "dataset": config.dataset, "setting": config.setting,
      "seed": config.seed, "status": status, "message": message,
      "tasks_completed": done, "num_tasks": benchmark.num_tasks,
      "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in row]
                          for row in matrix],
      "untrained_accuracy": progress.acc[0].tolist(),
      **summary,
      "wall_time_s": wall, "meta_updates": int(state.step),
      "benchmark": benchmark.info, "versions": package_versions(),
  }


def _write_outputs(workdir: str, results: dict, acc: np.ndarray, title: str) -> None:
  io_utils.atomic_write_json(os.path.join(workdir, RESULTS_FILE), results)
  done = results["tasks_completed"]
  if done > 0:
    plots.plot_accuracy_matrix(acc[1:], os.path.join(workdir, "accuracy_matrix.png"), title)
    plots.plot_task_accuracies(acc[1:], os.path.join(workdir, "task_accuracies.png"),
                               title, b=acc[0])


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
    DivergenceError: non-finite values; the last good checkpoint is kept and
      results.json is written with status 'diverged' and the finished rows.
    WorkdirConflictError, checkpointing.CheckpointError, ValueError: see messages.
  """
  start_time = time.time()
  prepare_workdir(config, workdir, overwrite)
  benchmark, learner, spec, train, evaluate = build(config, data_dir)
  num_tasks, steps = benchmark.num_tasks, spec.steps_per_task
  chunk = config.steps_per_program or steps
  title = f"{config.method} on {config.dataset} ({config.setting}, seed {config.seed})"

  init_key, data_root = jax.random.split(jax.random.PRNGKey(config.seed))
  state = learner.init(init_key, example_batch(benchmark, config.batch_size))
  test_x = jax.device_put(benchmark.test_x)
  test_y = jax.device_put(benchmark.test_y)

  def accuracy(state) -> np.ndarray:
    return np.asarray(jax.device_get(evaluate(state, test_x, test_y))) / test_y.shape[1]

  ckpt = checkpointing.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR),
                                    config.keep_checkpoints)
  metrics_path = os.path.join(workdir, METRICS_FILE)
  latest = ckpt.latest_step()
  if latest is not None:
    template = {"state": state, "progress": Progress(
        0, 0, np.zeros((num_tasks + 1, num_tasks)), 0.0).to_tree()}
    restored = ckpt.restore(template)
    state, progress = restored["state"], Progress.from_tree(restored["progress"])
    logging.info("Resumed %s from checkpoint %d (task %d, step %d).", workdir,
                 latest, progress.task, progress.step)
  else:
    progress = Progress(0, 0, np.full((num_tasks + 1, num_tasks), np.nan), 0.0)
    progress.acc[0] = accuracy(state)

  def wall() -> float:
    return progress.elapsed + time.time() - start_time

  def save():
    tree = dataclasses.replace(progress, elapsed=wall()).to_tree()
    ckpt.save(progress.task * steps + progress.step, {"state": state, "progress": tree})

  # Records and events past the checkpoint resumed from (all of them when there is
  # none: a process killed before its first checkpoint) are written again below.
  resume_step = latest or 0
  _trim_metrics_log(metrics_path, resume_step)
  first_task = progress.task

  last_save = time.time()
  with io_utils.JsonlWriter(metrics_path) as log, summary_writer.SummaryWriter(
      os.path.join(workdir, "tensorboard"),
      purge_step=resume_step) as tb:
    for t in range(progress.task, num_tasks):
      task_x = jax.device_put(benchmark.train_x[t])
      task_y = jax.device_put(benchmark.train_y[t])
      task_id = jax.device_put(np.int32(t))
      data_key = jax.random.fold_in(data_root, t)
      while progress.step < steps:
        n = min(chunk, steps - progress.step)
        state, m = train(state, task_x, task_y, task_id, data_key,
                         jax.device_put(np.int32(progress.step)), num_steps=n)
        m = jax.device_get(m)
        if not np.all(m["finite"]):
          first = progress.step + int(np.argmin(m["finite"]))
          epoch, batch = divmod(first, spec.steps_per_epoch)
          message = (f"Non-finite loss, gradient, weight or learning rate at task {t}, "
                     f"epoch {epoch}, step {batch} (step {first} of the task). The run "
                     "stopped; the last good checkpoint is kept and results.json holds "
                     "the finished tasks. Lower the learning rates (alpha_init, opt_lr, "
                     "opt_wt) or grad_clip_norm.")
          _write_outputs(workdir, _results(config, benchmark, progress, state, wall(),
                                           "diverged", message), progress.acc, title)
          raise DivergenceError(message)
        progress.step += n
        global_step = t * steps + progress.step
        record = {"global_step": global_step, "task": t,
                  "epoch": (progress.step - 1) // spec.steps_per_epoch,
                  "loss": float(np.mean(m["loss"])),
                  "inner_loss": float(np.mean(m["inner_loss"]))}
        log.write(record)
        tb.scalars({"train/loss": record["loss"],
                    "train/inner_loss": record["inner_loss"]}, global_step)
        minutes = config.checkpoint_every_minutes
        if progress.step < steps and minutes > 0 and time.time() - last_save > 60 * minutes:
          tb.flush()
          save()
          last_save = time.time()
      row = accuracy(state)
      progress.acc[t + 1] = row
      progress.task, progress.step = t + 1, 0
      seen = float(np.mean(row[:t + 1]))
      log.write({"global_step": (t + 1) * steps, "task": t, "eval_accuracy": row.tolist(),
                 "mean_seen_accuracy": seen})
      tb.scalars({"eval/mean_seen_accuracy": seen, "eval/mean_all_accuracy":
                  float(np.mean(row))}, (t + 1) * steps)
      tb.flush()
      save()
      last_save = time.time()
      eta = (time.time() - start_time) / (t + 1 - first_task) * (num_tasks - t - 1)
      logging.info("task %d/%d | seen-task accuracy %.4f | %.1f s | ETA %.0f s",
                   t + 1, num_tasks, seen, wall(), eta)

  results = _results(config, benchmark, progress, state, wall(), "complete")
  _write_outputs(workdir, results, progress.acc, title)
  ckpt.close()
  logging.info("%s: RA %.4f, BTI %.4f, LA %.4f, FWT %.4f in %.1f s", title,
               results["ra"], results["bti"], results["la"], results["fwt"],
               results["wall_time_s"])
  return results
