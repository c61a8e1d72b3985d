"""Stream schedules: which data a run trains on between two evaluations.

A run is a sequence of T segments, each followed by `end_task` (if the learner
has one) and an evaluation of every task, which fills one row of the T x T
accuracy matrix. A segment is a number of consecutive steps of one stream; step
g of a stream reads the batch `task_program.stream_batch` draws for g, so a
segment split into programs of any length, or resumed, sees the same batches.

- `TaskSchedule` ('tasks', the continual-learning setting): segment t is task
  t's own stream, `epochs` passes over its N samples; every sample of a batch
  has task id t.
- `IIDSchedule` ('iid', the multi-task upper bound): one stream over all T·N
  training samples, shuffled together (an epoch is one pass over all tasks'
  data), batches carrying per-sample task ids; its steps are cut into T segments
  of (nearly) equal length, so the run is evaluated at T evenly spaced points and
  the matrix keeps its shape. Only RA is meaningful then (rows are not tasks
  learnt in order): BTI, LA, FWT and forgetting are reported as null.
  Options of the official `iid2.py` loader: `tasks_per_batch` (each batch is
  B / k samples of each of k distinct random tasks; the official 4 x 8) and
  `steps_per_epoch` (its epochs are 5,000 batches whatever the data size).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from lamaml_jax.data.benchmark import Benchmark
from lamaml_jax.task_program import StreamSpec

KINDS = ("tasks", "iid")


@dataclasses.dataclass(frozen=True)
class TaskSchedule:
  """Task after task. `spec` is one task's stream."""
  num_tasks: int
  spec: StreamSpec
  kind: str = "tasks"

  @property
  def num_segments(self) -> int:
    return self.num_tasks

  def steps(self, t: int) -> int:
    del t
    return self.spec.steps_per_task

  def offset(self, t: int) -> int:
    """Global step (over the whole run) at which segment t starts."""
    return t * self.spec.steps_per_task

  def first_step(self, t: int) -> int:
    """Step of the segment's stream at which segment t starts."""
    del t
    return 0

  def stream_id(self, t: int) -> int:
    """Folded into a member's data key: each task has its own stream."""
    return t

  def data_index(self, t: int) -> int:
    """Segments with equal data indices train on the same arrays."""
    return t

  def data(self, benchmark: Benchmark, t: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x [N, ...], y [N], per-sample task ids [N]) of segment t, on the host."""
    return (benchmark.train_x[t], benchmark.train_y[t],
            np.full(benchmark.samples_per_task, t, np.int32))

  def locate(self, global_step: int) -> str:
    """'task 2, epoch 0, step 17' for the stream step after `global_step` steps."""
    task, step = divmod(global_step, self.spec.steps_per_task)
    epoch, batch = divmod(step, self.spec.steps_per_epoch)
    return f"task {task}, epoch {epoch}, step {batch} (step {step} of the task)"


@dataclasses.dataclass(frozen=True)
class IIDSchedule:
  """All tasks shuffled together, evaluated at T evenly spaced points. `spec` is
  the one stream over all T·N samples."""
  num_tasks: int
  spec: StreamSpec
  kind: str = "iid"

  @property
  def num_segments(self) -> int:
    return self.num_tasks

  def _bound(self, t: int) -> int:
    return (t * self.spec.steps_per_task) // self.num_tasks

  def steps(self, t: int) -> int:
    return self._bound(t + 1) - self._bound(t)

  def offset(self, t: int) -> int:
    return self._bound(t)

  def first_step(self, t: int) -> int:
    return self._bound(t)

  def stream_id(self, t: int) -> int:
    del t
    return self.num_tasks  # one stream; differs from every task's id

  def data_index(self, t: int) -> int:
    del t
    return 0

  def data(self, benchmark: Benchmark, t: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every task's training data, task after task: x [T·N, ...]."""
    del t
    n = benchmark.samples_per_task
    x = benchmark.train_x.reshape((-1, *benchmark.train_x.shape[2:]))
    return (x, benchmark.train_y.reshape(-1),
            np.repeat(np.arange(benchmark.num_tasks, dtype=np.int32), n))

  def locate(self, global_step: int) -> str:
    epoch, batch = divmod(global_step, self.spec.steps_per_epoch)
    return f"IID stream epoch {epoch}, step {batch} (step {global_step} of the run)"


def make_schedule(kind: str, *, num_tasks: int, samples_per_task: int,
                  batch_size: int, epochs: int,
                  tasks_per_batch: Optional[int] = None,
                  steps_per_epoch: Optional[int] = None):
  """The schedule `kind` ('tasks' or 'iid') of a benchmark's shape.

  Raises:
    ValueError: unknown kind, or IID options given to the task schedule.
  """
  if kind == "tasks":
    if tasks_per_batch or steps_per_epoch:
      raise ValueError("iid_tasks_per_batch and iid_steps_per_epoch apply to the IID "
                       "stream only (stream='iid').")
    return TaskSchedule(num_tasks, StreamSpec(samples_per_task, batch_size, epochs))
  if kind == "iid":
    spec = StreamSpec(num_tasks * samples_per_task, batch_size, epochs,
                      epoch_steps=steps_per_epoch or None,
                      tasks_per_batch=tasks_per_batch or None, num_tasks=num_tasks)
    if spec.steps_per_task < num_tasks:
      raise ValueError(f"The IID stream has {spec.steps_per_task} steps, fewer than its "
                       f"{num_tasks} evaluation points; train longer (epochs).")
    return IIDSchedule(num_tasks, spec)
  raise ValueError(f"Unknown stream {kind!r}; choose one of {', '.join(KINDS)}.")
