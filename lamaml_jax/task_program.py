"""Compiled programs of a run: training steps of a task, and evaluation.

A task's training data move to the device once; a program then runs `num_steps`
consecutive stream batches (all epochs and glances of a task by default) as one
`lax.scan`, with no Python dispatch or host transfer per step. Step g of a task
(0 <= g < epochs * steps_per_epoch) reads epoch e = g // S and batch b = g % S of
a per-epoch permutation drawn from the task's stream key (the member's data root
folded with the task id), so every stream batch
is a pure function of (seed, task, g): a run split into programs of any length,
or resumed from a checkpoint, sees exactly the same batches.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from lamaml_jax import members
from lamaml_jax import timeline as timeline_lib
from lamaml_jax.data.benchmark import Augment, Preprocess
from lamaml_jax.learners.base import Learner, State
from lamaml_jax.types import Batch, PRNGKey


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """Shape of one stream (a task's, or the IID stream over all tasks).

  Attributes:
    samples_per_task: N samples in the stream's data (T·N for the IID stream).
    batch_size: B samples per incoming batch; the last N mod B samples of each
      epoch's permutation are dropped (none for the paper's settings).
    epochs: passes over the data.
    epoch_steps: batches per epoch; None: N // B (one pass). The official IID
      loader's epochs are 5,000 batches (an epoch longer than a pass wraps
      around its permutation).
    tasks_per_batch: None: batches follow each epoch's permutation. k: each
      batch holds B / k random samples of each of k distinct random tasks (the
      official IID loader, k = 4); the data is then `num_tasks` equal blocks.
    num_tasks: blocks of the data (used with `tasks_per_batch`).
  """
  samples_per_task: int
  batch_size: int
  epochs: int
  epoch_steps: Optional[int] = None
  tasks_per_batch: Optional[int] = None
  num_tasks: int = 1

  def __post_init__(self):
    if not 1 <= self.batch_size <= self.samples_per_task:
      raise ValueError(f"batch_size={self.batch_size} must be in [1, samples_per_task="
                       f"{self.samples_per_task}].")
    if self.epochs < 1:
      raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
    if self.epoch_steps is not None and self.epoch_steps < 1:
      raise ValueError(f"epoch_steps must be >= 1, got {self.epoch_steps}.")
    k = self.tasks_per_batch
    if k is not None and not (1 <= k <= self.num_tasks and self.batch_size % k == 0
                              and self.batch_size // k <= self.samples_per_task
                              // self.num_tasks):
      raise ValueError(f"tasks_per_batch={k} must divide batch_size={self.batch_size} "
                       f"and lie in [1, {self.num_tasks}] tasks.")

  @property
  def steps_per_epoch(self) -> int:
    return self.epoch_steps or self.samples_per_task // self.batch_size

  @property
  def steps_per_task(self) -> int:
    return self.epochs * self.steps_per_epoch


def epoch_orders(spec: StreamSpec, data_key: PRNGKey) -> jax.Array:
  """[epochs, N] the order of the stream's samples in each epoch (`stream_batch`)."""
  order_key = jax.random.split(data_key)[0]
  return jax.vmap(lambda e: jax.random.permutation(
      jax.random.fold_in(order_key, e), spec.samples_per_task))(
          jnp.arange(spec.epochs, dtype=jnp.int32))


def _batch_indices(spec: StreamSpec, data_key: PRNGKey, step: jax.Array,
                   orders: jax.Array) -> jax.Array:
  """[B] rows of the stream's data read at `step`."""
  if spec.tasks_per_batch is None:
    epoch = step // spec.steps_per_epoch
    # With more steps per epoch than one pass, epochs wrap around their order.
    offset = (step % spec.steps_per_epoch) * spec.batch_size % (
        spec.samples_per_task - spec.samples_per_task % spec.batch_size)
    return jax.lax.dynamic_slice(orders[epoch], (offset,), (spec.batch_size,))
  k, per_task = spec.tasks_per_batch, spec.samples_per_task // spec.num_tasks
  task_key, sample_key = jax.random.split(
      jax.random.fold_in(jax.random.split(data_key, 3)[2], step))
  tasks = jax.random.permutation(task_key, spec.num_tasks)[:k]
  rows = jax.vmap(lambda kk: jax.random.permutation(kk, per_task)[
      :spec.batch_size // k])(jax.random.split(sample_key, k))
  return (tasks[:, None] * per_task + rows).reshape(-1)


def stream_batch(spec: StreamSpec, x: jax.Array, y: jax.Array,
                 sample_task: jax.Array, data_key: PRNGKey, step: jax.Array,
                 preprocess: Preprocess, augment: Optional[Augment],
                 orders: jax.Array) -> tuple[Batch, jax.Array]:
  """The stream batch at step `step`, and its epoch.

  Args:
    x: [N, *input_shape] raw training inputs of the stream.
    y: [N] labels.
    sample_task: [N] int32 task id of each sample.
    data_key: key of this stream (order and augmentation).
    step: [] int32 step within the stream.
    orders: `epoch_orders(spec, data_key)`, computed once per program (not a
      sort of N keys per step).

  Returns:
    (Batch of B preprocessed samples, [] epoch).
  """
  epoch = step // spec.steps_per_epoch
  idx = _batch_indices(spec, data_key, step, orders)
  xb = x[idx]
  if augment is not None:
    aug_key = jax.random.split(data_key)[1]
    xb = augment(jax.random.fold_in(aug_key, step), xb)
  batch = Batch(x=preprocess(xb), y=y[idx].astype(jnp.int32),
                task=sample_task[idx].astype(jnp.int32),
                weight=jnp.ones((spec.batch_size,), jnp.float32))
  return batch, epoch


Batching = "str | members.Placement"  # 'vmap', 'map' (one device) or a Placement


def over_members(fn: Callable, batching: Batching, per_device: int = 0) -> Callable:
  """Maps `fn` over the leading member axis of all its arguments but the last
  `per_device` (device blocks that every member of a device reads whole,
  `members.Placement.put_blocks`): as `batching` ('vmap' or 'map' on one device;
  `members.map_local`) says, or over the devices of a `members.Placement`."""
  return members.placement(batching).map(fn, per_device)


def make_train_program(learner: Learner, spec: StreamSpec, preprocess: Preprocess,
                       augment: Optional[Augment], batching: Batching = "vmap",
                       compiler_options: Optional[dict] = None,
                       dynamic_length: bool = False) -> Callable:
  """Returns `train(state, x, y, sample_task, stream, data_root, start, [length,]
  num_steps)`.

  Mapped over a leading member axis (see `members`, `over_members`): state
  [M, ...], x [M, N, ...], y [M, N], sample_task [M, N], data_root [M, 2] (the
  members' data keys; the key of stream s, e.g. task s's, is
  `fold_in(data_root, s)`); stream and start (the first step) are shared
  scalars. `num_steps` is static (one compilation per distinct value); the
  others are device arrays. Returns (state, metrics), each metric [M, num_steps].

  With `dynamic_length`, the program takes `length` ([] int32, at most
  `num_steps`) and runs that many steps (a `lax.fori_loop` whose trip count is
  data, not shape): one executable serves programs of every length up to
  `num_steps`, and metrics past `length` are zero. The steps are the same
  computation as the scan's. `compiler_options` go to XLA (see `train.build`).
  """
  def train_one(state: State, x, y, sample_task, data_key, start, length,
                num_steps: int):
    orders = epoch_orders(spec, data_key)

    def step(state, g):
      batch, epoch = stream_batch(spec, x, y, sample_task, data_key, g,
                                  preprocess, augment, orders)
      return learner.observe(state, batch, epoch)
    if length is None:
      return jax.lax.scan(step, state, start + jnp.arange(num_steps, dtype=jnp.int32))
    metrics = jax.tree_util.tree_map(
        lambda m: jnp.zeros((num_steps, *m.shape), m.dtype),
        jax.eval_shape(step, state, start)[1])

    def body(i, carry):
      state, metrics = carry
      state, m = step(state, start + i)
      return state, jax.tree_util.tree_map(lambda a, v: a.at[i].set(v), metrics, m)
    return jax.lax.fori_loop(0, jnp.minimum(length, num_steps), body, (state, metrics))

  def train(state: State, x, y, sample_task, stream, data_root, start, length=None,
            *, num_steps: int):
    def one(state, x, y, sample_task, data_root):
      data_key = jax.random.fold_in(data_root, stream)
      return train_one(state, x, y, sample_task, data_key, start, length, num_steps)
    return over_members(one, batching)(state, x, y, sample_task, data_root)

  if dynamic_length:
    program = lambda state, x, y, sample_task, stream, data_root, start, length, *, \
        num_steps: train(state, x, y, sample_task, stream, data_root, start, length,
                         num_steps=num_steps)
  else:
    program = lambda state, x, y, sample_task, stream, data_root, start, *, \
        num_steps: train(state, x, y, sample_task, stream, data_root, start,
                         num_steps=num_steps)
  return jax.jit(program, static_argnames="num_steps", donate_argnums=0,
                 compiler_options=compiler_options)


class CompiledAhead:
  """A train program's executables by `num_steps`, each compiled once.

  `compile_ahead` starts a compilation in a background thread from shapes alone,
  so that a run can compile its task program while it initialises and evaluates
  the untrained model. A length never announced compiles on its first call.
  `timeline` (see `lamaml_jax.timeline`) gets the background compilations
  ("compile_train_program", overlapping other phases) and the caller's waits for
  them ("wait_for_compilation").
  """

  def __init__(self, program: Callable, timeline=timeline_lib.NO_TIMELINE):
    self._program = program
    self._timeline = timeline
    self._pool = concurrent.futures.ThreadPoolExecutor(1, "compile")
    self._executables: dict[int, concurrent.futures.Future] = {}

  def compile_ahead(self, *args: Any, num_steps: int) -> None:
    """Compiles for these argument shapes (arrays or `jax.ShapeDtypeStruct`s).

    Tracing and lowering run in the caller: they hold Python's GIL, and run 0.15 s
    slower (MNIST La-MAML) when the caller traces other programs meanwhile.
    """
    if num_steps not in self._executables:
      lowered = self._program.lower(*args, num_steps=num_steps)

      def compile_():
        with self._timeline.span("compile_train_program"):
          return lowered.compile()
      self._executables[num_steps] = self._pool.submit(compile_)

  def compiling(self, num_steps: int) -> bool:
    """Whether a compilation for `num_steps` is still running."""
    future = self._executables.get(num_steps)
    return future is not None and not future.done()

  def executable(self, *args: Any, num_steps: int) -> Callable:
    """The compiled program for these arguments (waits for its compilation)."""
    self.compile_ahead(*args, num_steps=num_steps)
    future = self._executables[num_steps]
    if future.done():
      return future.result()
    with self._timeline.span("wait_for_compilation"):
      return future.result()

  def __call__(self, *args: Any, num_steps: int):
    return self.executable(*args, num_steps=num_steps)(*args)

  def __enter__(self) -> "CompiledAhead":
    return self

  def __exit__(self, *exc) -> None:
    # A compilation still running when a run fails finishes in the background.
    self._pool.shutdown(wait=False, cancel_futures=True)


def make_end_task_program(learner: Learner, preprocess: Preprocess,
                          batching: Batching = "vmap") -> Optional[Callable]:
  """Returns `end_task(state, x [M, N, ...], y [M, N], task) -> state`, or None
  when the learner has no `end_task`. Inputs are raw; the learner sees them
  preprocessed (see `learners.base`)."""
  if learner.end_task is None:
    return None

  def end_task(state: State, x, y, task):
    def one(state, x, y):
      return learner.end_task(state, preprocess(x), y.astype(jnp.int32), task)
    return over_members(one, batching)(state, x, y)

  return jax.jit(end_task, donate_argnums=0)


def largest_divisor_at_most(n: int, cap: int) -> int:
  return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def make_eval_program(learner: Learner, preprocess: Preprocess,
                      eval_batch_size: int, batching: Batching = "vmap",
                      class_incremental: bool = False,
                      drop_last: bool = False) -> Callable:
  """Returns `evaluate(state [M], test_x [S, T, n, ...], test_y [S, T, n],
  member_data [M], seen) -> correct [M, T]`, compiled.

  Member m is scored on the test data of its seed, test_x[member_data[m]]: the
  members of one seed (a grid's settings) share one copy, sliced chunk by chunk
  inside the program (no per-member copy even when vmapped). With a sharded
  `Placement`, test_x and test_y are device blocks (`Placement.put_blocks`: S is
  a device's seeds) and member_data indexes its device's block. Each task's samples
  are scored on that task's head, in chunks of the largest divisor of n not
  above `eval_batch_size`; the result counts correct answers (int32), so
  accuracies divided on the host are exact fractions. `seen` ([] int32) is the
  number of tasks trained so far: with `class_incremental` heads, task j is
  predicted over the classes of tasks 0..max(j, seen - 1), i.e. every class seen
  (`heads`); task-incremental heads ignore it. `drop_last` never scores each
  task's last sample while still dividing by n (the official MNIST evaluation,
  main.py's `eval_tasks`; a quirk, off by default).
  """
  def evaluate(state: State, test_x: jax.Array, test_y: jax.Array,
               index: jax.Array, seen: jax.Array) -> jax.Array:
    n = test_x.shape[2]
    chunk = largest_divisor_at_most(n, eval_batch_size)

    def task_accuracy(t):
      head = jnp.maximum(t, seen - 1) if class_incremental else t

      def correct(c):
        zeros = (0,) * (test_x.ndim - 3)
        x = jax.lax.dynamic_slice(test_x, (index, t, c * chunk, *zeros),
                                  (1, 1, chunk, *test_x.shape[3:]))[0, 0]
        y = jax.lax.dynamic_slice(test_y, (index, t, c * chunk), (1, 1, chunk))[0, 0]
        logits = learner.predict(state, preprocess(x), head)
        right = jnp.argmax(logits, -1) == y
        if drop_last:
          right &= c * chunk + jnp.arange(chunk) < n - 1
        return jnp.sum(right, dtype=jnp.int32)

      return jnp.sum(jax.lax.map(correct, jnp.arange(n // chunk, dtype=jnp.int32)))

    return jax.lax.map(task_accuracy, jnp.arange(test_x.shape[1], dtype=jnp.int32))

  def evaluate_members(state, test_x, test_y, member_data, seen):
    return over_members(lambda s, i, x, y: evaluate(s, x, y, i, seen), batching,
                        per_device=2)(state, member_data, test_x, test_y)

  return jax.jit(evaluate_members)
