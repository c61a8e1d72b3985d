"""The learner protocol and helpers shared by every method.

A method is a `Method`: a frozen hyperparameter dataclass and a factory
`make(hparams, context) -> Learner`. The factory gets everything it may know
about the run from a `BuildContext` (network, heads, task and stream sizes, the
benchmark's preprocessing); nothing comes from globals or the config.

A `Learner` is a few pure functions over an explicit state pytree (a NamedTuple
of arrays), in the spirit of `optax.GradientTransformation`. They are returned
uncompiled: the runner compiles them inside its programs (and tests may wrap
them in `chex.assert_max_traces` or `jax.jit` themselves).

  init(key, example_batch, **sweep) -> state
  observe(state, batch, epoch) -> (state, metrics)     # one incoming stream batch
  predict(state, x, task) -> logits [B, num_outputs]   # masked to the task's head
  end_task(state, task_x, task_y, task) -> state       # optional, see below
  summary(state) -> {name: [] array}                   # optional, for results.json
  loss(params, batch) -> []                             # optional, for analyses
  params(state) -> params                              # the network's weights

`batch` is a `Batch` of B samples, each with its own task id (the task-by-task
stream gives one task per batch; the IID stream mixes them). `epoch` is the
0-based pass over the current stream segment (some methods fill their replay
buffer only in the first one). `metrics` maps names to [] scalars: 'loss' and
'finite' (False once a NaN/inf appears in the loss, gradients, weights or
learning rates) always, plus whatever the learner wants logged; the runner logs
and writes to TensorBoard every one but 'finite', under the learner's own names.

`sweep` holds the scalars of `Method.sweepable` that a grid varies inside one
program (as traced [] arrays); a learner keeps them in its state.

`loss` is the classification loss the learner's gradients follow, the
weighted cross-entropy of each sample's own head for every method here; with
`params` it lets the runner's probes (e.g. `alignment`) differentiate a task's
loss at the learner's current weights without knowing its state.

`end_task` runs once after the last training step of each task (of each
evaluation segment, on the IID stream) and before that task's evaluation,
inside one compiled program, and is covered by checkpoints and exact resume
like every other step. It sees the task's whole training data preprocessed
(`context.preprocess`) and not augmented: task_x [N, *input_shape] float32,
task_y [N] int32, task [] int32.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple, Optional, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lamaml_jax import heads
from lamaml_jax.data.benchmark import Augment, Preprocess
from lamaml_jax.types import Batch, Metrics, Params, PRNGKey

# A learner's state: a pytree of arrays, by convention a NamedTuple whose fields
# say what it carries (params, learning rates, optimizer states, memories, keys).
State = Any


class InitFn(Protocol):
  def __call__(self, key: PRNGKey, example: Batch, **sweep: jax.Array) -> State:
    ...


class ObserveFn(Protocol):
  def __call__(self, state: State, batch: Batch, epoch: jax.Array
               ) -> tuple[State, Metrics]:
    ...


class PredictFn(Protocol):
  def __call__(self, state: State, x: jax.Array, task: jax.Array) -> jax.Array:
    ...


class EndTaskFn(Protocol):
  def __call__(self, state: State, task_x: jax.Array, task_y: jax.Array,
               task: jax.Array) -> State:
    ...


def state_params(state: State) -> Params:
  """The network weights of a state with a `params` field (every learner here)."""
  return state.params


class Learner(NamedTuple):
  """The pure functions of one method (module docstring)."""
  init: InitFn
  observe: ObserveFn
  predict: PredictFn
  end_task: Optional[EndTaskFn] = None
  summary: Optional[Callable[[State], Metrics]] = None
  loss: Optional[Callable[[Params, Batch], jax.Array]] = None
  params: Callable[[State], Params] = state_params


@dataclasses.dataclass(frozen=True)
class BuildContext:
  """What a learner factory knows about the run it is built for.

  Attributes:
    network: the Flax module (`networks.make_network`).
    num_outputs: width of its output layer.
    classes_per_task: logits each task owns (task-incremental heads), or None
      for one shared head (MNIST).
    num_tasks: T tasks of the benchmark.
    samples_per_task: N training samples of a task.
    batch_size: B samples per incoming stream batch.
    epochs: passes over each task (over all data on the IID stream).
    steps_per_task: stream batches of a task, all epochs.
    input_shape: shape of one preprocessed model input.
    preprocess: the benchmark's raw -> float32 model input (jittable).
    augment: the benchmark's training augmentation (None: off), as the stream
      applies it; a learner that stores augmented inputs may use it.
    class_incremental: split benchmarks scored on one head over every class
      seen so far instead of each task's own (`heads`).
  """
  network: nn.Module
  num_outputs: int
  classes_per_task: Optional[int]
  num_tasks: int
  samples_per_task: int
  batch_size: int
  epochs: int
  steps_per_task: int
  input_shape: tuple[int, ...]
  preprocess: Preprocess = lambda x: x
  augment: Optional[Augment] = None
  class_incremental: bool = False

  @property
  def heads(self) -> heads.Heads:
    """The head layout the losses and `predict` mask logits with."""
    return heads.Heads(self.classes_per_task, self.class_incremental)


def no_memory(hparams: Any, context: BuildContext) -> int:
  del hparams, context
  return 0


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered method.

  Attributes:
    hparams: frozen dataclass of its hyperparameters; validates in __post_init__.
    make: factory (hparams, BuildContext) -> Learner.
    sweepable: scalars of `hparams` a grid may vary inside one program (passed
      to `init` as keyword arguments).
    step_sizes: the hyperparameters named when a run diverges ("lower ...").
    schedule: the stream it is meant for: 'tasks' (one task after another) or
      'iid' (all tasks shuffled together: the multi-task upper bound).
    memory_samples: (hparams, context) -> replay-memory budget in samples, as
      recorded in results.json (0: keeps no samples).
  """
  hparams: type
  make: Callable[[Any, BuildContext], Learner]
  sweepable: tuple[str, ...] = ()
  step_sizes: tuple[str, ...] = ()
  schedule: str = "tasks"
  memory_samples: Callable[[Any, BuildContext], int] = no_memory


def make_loss(network: nn.Module, classes_per_task: heads.Layout
              ) -> Callable[[Params, Batch], jax.Array]:
  """(params, batch) -> weighted mean cross-entropy on each sample's own head."""
  def loss_fn(params: Params, batch: Batch) -> jax.Array:
    logits = network.apply({"params": params}, batch.x)
    return heads.cross_entropy(logits, batch, classes_per_task)
  return loss_fn


def make_predict(network: nn.Module, classes_per_task: heads.Layout) -> PredictFn:
  """(state, x, task) -> masked logits, for any state with a `params` field."""
  def predict(state: State, x: jax.Array, task: jax.Array) -> jax.Array:
    logits = network.apply({"params": state.params}, x)
    return heads.mask_logits(logits, task, classes_per_task)
  return predict


def clip_by_global_norm(tree: Params, max_norm: Optional[float]) -> Params:
  """Scales `tree` so that its global L2 norm is at most `max_norm` (torch's
  `clip_grad_norm_`, up to its 1e-6 epsilon); None leaves it unclipped."""
  if max_norm is None:
    return tree
  clip = optax.clip_by_global_norm(max_norm)
  return clip.update(tree, clip.init(tree))[0]


def all_finite(*trees) -> jax.Array:
  """[] bool: every element of every leaf is finite."""
  leaves = jax.tree_util.tree_leaves(trees)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def tree_select(pred: jax.Array, on_true, on_false):
  """Leafwise `where(pred, on_true, on_false)` for a scalar predicate."""
  return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def concat_batches(*batches: Batch) -> Batch:
  return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *batches)


def sgd_step(params: Params, grads: Params, lr: jax.Array) -> Params:
  """θ ← θ − lr g (plain SGD: no momentum, no weight decay, as the official code)."""
  return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)


def sweep_values(hp: Any, sweep: Mapping[str, jax.Array],
                 sweepable: tuple[str, ...]) -> dict[str, jax.Array]:
  """{name: [] float} for each sweepable scalar: `sweep[name]` (a grid's traced
  value, as `init` receives it) or the hyperparameter, as float32 (float64 in
  x64 mode). Raises ValueError on a name outside `sweepable`."""
  unknown = set(sweep) - set(sweepable)
  if unknown:
    raise ValueError(f"Cannot sweep {sorted(unknown)}; sweepable: {sweepable}.")
  dtype = jnp.result_type(float)
  return {name: jnp.asarray(sweep.get(name, getattr(hp, name)), dtype)
          for name in sweepable}


def check_positive(name: str, value: float, allow_zero: bool = True) -> None:
  """Raises ValueError naming a non-finite, negative (or zero, if disallowed)
  hyperparameter."""
  ok = value is not None and math.isfinite(value) and (
      value > 0 or (allow_zero and value == 0))
  if not ok:
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")


def check_at_least(name: str, value: int, low: int) -> None:
  """Raises ValueError naming an integer hyperparameter below `low`."""
  if value is None or int(value) != value or value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def check_replay_fits(replay_batch_size: int, memory_size: int) -> None:
  """Raises ValueError when a replay batch asks for more samples than the memory
  holds."""
  if replay_batch_size > memory_size:
    raise ValueError(
        f"replay_batch_size={replay_batch_size} exceeds memory_size={memory_size}; "
        "lower the replay batch or enlarge the memory.")
