"""GEM (Lopez-Paz & Ranzato, 2017) as the official La-MAML code runs it
(its `gem.py`), and the episodic-memory learner A-GEM shares with it.

One `observe` call on B samples of task t (the stream gives one task per batch):
  glance 0 writes the batch into memory[t] (`episodic_memory.write`); then per glance
  1. G [T, P]: row k = flat ∇θ CE(memory[k]; head k), clipped to `grad_clip_norm`
     if `clip_memory_grads` (the official code; the original GEM does not), for
     past tasks k < t with a filled row; 0 for the other rows. All T at once (vmap).
  2. g = clip(∇θ CE(batch)) on each sample's head.
  3. if G_k·g < 0 for some k: v = argmin_{v ≥ margin} ½vᵀ(GGᵀ + εI)v + (Gg)ᵀv
     (`qp.solve_box_qp`; a zero row of G decouples and its v_k = margin multiplies
     nothing), g ← Gᵀv + g (not re-clipped); else g is left as it is.
  4. θ ← θ − lr g.
Steps 1 and 3 read only the first R of the T memories, R ≥ t
(`past_buckets`, `on_past_prefix`): the rows beyond R are never past ones.
Since the current task's memory is never among the past ones, writing it once
before the glances equals the official write inside glance 0. Metrics (of the last
glance): 'loss' (the batch's, before its step), 'finite', 'violations' (past tasks
with G_k·g < 0), 'projected' (0/1) and 'qp_residual' (`qp.BoxQPSolution`).

Shared with A-GEM: `EpisodicHparams`, `EpisodicState`, `make_episodic` (memory,
glances, clipped gradient, SGD step and metrics around a method's `Correction`),
`past_tasks` and `task_gradients`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from lamaml_jax import episodic_memory
from lamaml_jax import networks
from lamaml_jax import qp
from lamaml_jax.learners import base
from lamaml_jax.types import Batch, Params, PRNGKey

_HIGHEST = jax.lax.Precision.HIGHEST
LossFn = Callable[[Params, Batch], jax.Array]
# (memory loss, params, memory, current task [], clipped flat gradient g [P])
#   -> (corrected g [P], metrics)
Correction = Callable[[LossFn, Params, episodic_memory.EpisodicMemory, jax.Array,
                       jax.Array], tuple[jax.Array, dict]]


def check_bool(name: str, value) -> None:
  """Raises ValueError naming a hyperparameter that is not a bool."""
  if not isinstance(value, bool):
    raise ValueError(f"{name} must be True or False, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class EpisodicHparams:
  """Hyperparameters of every episodic-memory method.

  Attributes:
    lr: SGD step size (sweepable).
    glances: SGD steps per incoming batch.
    n_memories: memory rows per task.
    grad_clip_norm: global-norm clip of the current batch's gradient (None: off).
    shared_pointer: the official ring pointer shared by all tasks
      (`episodic_memory`); False: one per task, starting at row 0.
    memory_gradients: how the past tasks' gradients are computed
      (`task_gradients`: 'vmap', 'past_only', or 'auto': past_only for a conv
      net on CPU, vmap otherwise); the same numbers.
    past_buckets: the correction reads only the first R task memories, R the
      smallest of ⌈T·i / past_buckets⌉ (i = 1..past_buckets) that holds every
      past task (`on_past_prefix`); 1 reads all T on every call. The same
      numbers up to rounding. None: 4 on CPU, 1 elsewhere (`past_buckets_for`);
      with vmapped members (`member_batching='vmap'`) every bucket is computed,
      so set 1 there.
  """
  lr: float = 0.03
  glances: int = 1
  n_memories: int = 10
  grad_clip_norm: Optional[float] = 2.0
  shared_pointer: bool = False
  memory_gradients: str = "auto"
  past_buckets: Optional[int] = None

  def __post_init__(self):
    base.check_positive("lr", self.lr)
    base.check_at_least("glances", self.glances, 1)
    base.check_at_least("n_memories", self.n_memories, 1)
    if self.grad_clip_norm is not None:
      base.check_positive("grad_clip_norm", self.grad_clip_norm, allow_zero=False)
    check_bool("shared_pointer", self.shared_pointer)
    if self.memory_gradients not in MEMORY_GRADIENTS:
      raise ValueError(f"memory_gradients must be one of {MEMORY_GRADIENTS}, got "
                       f"{self.memory_gradients!r}.")
    if self.past_buckets is not None:
      base.check_at_least("past_buckets", self.past_buckets, 1)


@dataclasses.dataclass(frozen=True)
class GEMHparams(EpisodicHparams):
  """`EpisodicHparams` and:

  Attributes:
    memory_strength: the margin: lower bound of the dual variables v.
    qp_epsilon: ε added to the diagonal of GGᵀ.
    clip_memory_grads: clip each past task's memory gradient to grad_clip_norm
      (official); False: raw gradients (the original GEM).
    qp_iterations: Newton iterations of the QP solver (static).
  """
  memory_strength: float = 0.5
  qp_epsilon: float = 1e-3
  clip_memory_grads: bool = True
  qp_iterations: int = 20

  def __post_init__(self):
    super().__post_init__()
    base.check_positive("memory_strength", self.memory_strength)
    base.check_positive("qp_epsilon", self.qp_epsilon)
    check_bool("clip_memory_grads", self.clip_memory_grads)
    base.check_at_least("qp_iterations", self.qp_iterations, 1)


class EpisodicState(NamedTuple):
  """params: network weights; memory: the task memories; lr: [] SGD step size."""
  params: Params
  memory: episodic_memory.EpisodicMemory
  lr: jax.Array


def past_tasks(memory: episodic_memory.EpisodicMemory, task: jax.Array,
               first: int = 0) -> jax.Array:
  """[T] bool: first ≤ k < task and memory[k] has a filled row."""
  k = jnp.arange(memory.y.shape[0])
  return (k >= first) & (k < task) & jnp.any(memory.valid, axis=1)


MEMORY_GRADIENTS = ("auto", "vmap", "past_only")
SWEEPABLE = ("lr",)


def task_gradients(memory_loss: LossFn, params: Params,
                   memory: episodic_memory.EpisodicMemory,
                   clip_norm: Optional[float], past: Optional[jax.Array] = None,
                   impl: str = "vmap") -> jax.Array:
  """[T, P]: row k = flat clip(∇θ memory_loss(memory[k])) (0 for an empty task).

  impl 'vmap' computes all T rows at once; 'past_only' one after another
  (`lax.map`), each behind a `lax.cond` on `past` [T], so that only the past
  tasks' gradients are computed (rows outside `past` are 0): half the work of
  'vmap' on average over a run, which pays where each task's gradient is
  costly (a conv net on CPU), not for an MLP, where one vmapped computation is
  faster (BUILD.md). Under a member vmap the cond becomes a select and both
  compute every row. Pass 'vmap' or 'past_only' (`EpisodicHparams` resolves
  'auto').
  """
  def one(b: Batch) -> jax.Array:
    grads = base.clip_by_global_norm(jax.grad(memory_loss)(params, b), clip_norm)
    return ravel_pytree(grads)[0]
  rows = episodic_memory.all_tasks(memory)
  if impl == "vmap" or past is None:
    return jax.vmap(one)(rows)
  size = ravel_pytree(params)[0].shape
  return jax.lax.map(lambda a: jax.lax.cond(
      a[0], lambda b: one(b), lambda b: jnp.zeros(size, jnp.float32), a[1]),
      (past, rows))


def memory_gradients_impl(hp: EpisodicHparams, context: base.BuildContext) -> str:
  """`hp.memory_gradients` with 'auto' resolved (see `task_gradients`)."""
  if hp.memory_gradients != "auto":
    return hp.memory_gradients
  conv = isinstance(context.network, networks.ConvNet)
  return "past_only" if conv and jax.default_backend() == "cpu" else "vmap"


def past_buckets_for(hp: EpisodicHparams) -> int:
  """`hp.past_buckets` with None resolved: 4 on CPU, where a `lax.switch` runs
  one branch, and 1 elsewhere, where members are vmapped and a switch under vmap
  computes every branch."""
  if hp.past_buckets is not None:
    return hp.past_buckets
  return 4 if jax.default_backend() == "cpu" else 1


def prefix_sizes(num_tasks: int, buckets: int) -> tuple[int, ...]:
  """The prefix lengths R of `on_past_prefix`: ⌈T·i / buckets⌉, i = 1..buckets."""
  return tuple(sorted({-(-num_tasks * i // buckets) for i in range(1, buckets + 1)}))


def on_past_prefix(memory: episodic_memory.EpisodicMemory, task: jax.Array,
                   fn: Callable, sizes: tuple[int, ...]):
  """fn(memory of tasks 0..R-1) for the smallest R in `sizes` (static, ascending,
  the last T) with R ≥ task, which holds every past task k < task.

  The shapes of what `fn` reads shrink with R, so a call early in a stream does
  less work: the past tasks' gradients cost in proportion to R, and GEM's Gram
  matrix of them more than that above 16 rows on XLA:CPU (BUILD.md). One branch
  per size behind a `lax.switch`; `fn` must return the same shapes for every R.
  Under a member vmap the switch becomes a select that computes every branch.
  """
  if len(sizes) == 1:
    return fn(memory)
  index = jnp.minimum(jnp.searchsorted(jnp.asarray(sizes, jnp.int32), task),
                      len(sizes) - 1)
  branches = [lambda _, r=r: fn(episodic_memory.first_tasks(memory, r)) for r in sizes]
  return jax.lax.switch(index, branches, None)


def make_episodic(hp: EpisodicHparams, context: base.BuildContext,
                  correct: Correction) -> base.Learner:
  """The learner of the module docstring with step 3 replaced by `correct`,
  which sees the first R task memories (`on_past_prefix`): every past one."""
  network, layout = context.network, context.heads
  loss_fn = base.make_loss(network, layout)
  sizes = prefix_sizes(context.num_tasks, past_buckets_for(hp))

  def memory_loss(params: Params, b: Batch) -> jax.Array:
    """`loss_fn` with in-head labels (task k's first class) on unfilled rows
    (weight 0): their zero labels lie outside task k's task-incremental head for
    k > 0, which makes the loss value 0 · ∞ = NaN (its gradient stays finite,
    but NaN checkers would trip)."""
    first_class = b.task * (layout.classes_per_task or 0)
    return loss_fn(params, b._replace(y=jnp.where(b.weight > 0, b.y, first_class)))

  def init(key: PRNGKey, example: Batch, **sweep: jax.Array) -> EpisodicState:
    """Initial state; `sweep` may override `lr` (a [] array)."""
    values = base.sweep_values(hp, sweep, SWEEPABLE)
    params = network.init(key, example.x)["params"]
    memory = episodic_memory.init(context.num_tasks, hp.n_memories,
                                  example.x.shape[1:], example.x.dtype)
    return EpisodicState(params=params, memory=memory,
                         lr=values["lr"])

  def observe(state: EpisodicState, batch: Batch, epoch: jax.Array
              ) -> tuple[EpisodicState, dict]:
    del epoch  # every call writes its batch (official)
    task = batch.task[0]
    memory = episodic_memory.write(state.memory, batch, task, hp.shared_pointer)
    unravel = ravel_pytree(state.params)[1]

    def glance(params, _):
      loss, grads = jax.value_and_grad(loss_fn)(params, batch)
      g = ravel_pytree(base.clip_by_global_norm(grads, hp.grad_clip_norm))[0]
      g, metrics = on_past_prefix(
          memory, task, lambda rows: correct(memory_loss, params, rows, task, g), sizes)
      return base.sgd_step(params, unravel(g), state.lr), {"loss": loss, **metrics}

    params, outs = jax.lax.scan(glance, state.params, None, length=hp.glances)
    metrics = {name: value[-1] for name, value in outs.items()}
    metrics["finite"] = base.all_finite(outs["loss"], params)
    return EpisodicState(params=params, memory=memory, lr=state.lr), metrics

  return base.Learner(init=init, observe=observe,
                      predict=base.make_predict(network, layout),
                      loss=loss_fn)


def gem_projection(G: jax.Array, g: jax.Array, past: jax.Array, margin: float,
                   epsilon: float, iterations: int) -> tuple[jax.Array, dict]:
  """GEM's step 3 on G [T, P] (rows outside `past` [T] ignored) and g [P].

  Returns:
    (g̃ [P], metrics): g̃ = Gᵀv + g if some past G_k·g < 0, else g; metrics
    'violations' (violated constraints), 'projected' (0/1), 'qp_residual'.
  """
  G = jnp.where(past[:, None], G, 0.0)
  dots = jnp.dot(G, g, precision=_HIGHEST)
  violated = past & (dots < 0)

  def project(_):
    gram = jnp.dot(G, G.T, precision=_HIGHEST)
    sol = qp.solve_box_qp(gram + epsilon * jnp.eye(G.shape[0], dtype=G.dtype), dots,
                          jnp.full_like(dots, margin), iterations)
    return jnp.dot(sol.v, G, precision=_HIGHEST) + g, sol.residual

  any_violated = jnp.any(violated)
  g, residual = jax.lax.cond(any_violated, project,
                             lambda _: (g, jnp.zeros((), g.dtype)), None)
  return g, {"violations": jnp.sum(violated).astype(jnp.float32),
             "projected": any_violated.astype(jnp.float32), "qp_residual": residual}


def make(hp: GEMHparams, context: base.BuildContext) -> base.Learner:
  """Builds GEM (pure functions; the runner compiles them)."""
  memory_clip = hp.grad_clip_norm if hp.clip_memory_grads else None
  impl = memory_gradients_impl(hp, context)

  def correct(memory_loss, params, memory, task, g):
    past = past_tasks(memory, task)
    G = task_gradients(memory_loss, params, memory, memory_clip, past, impl)
    return gem_projection(G, g, past, hp.memory_strength, hp.qp_epsilon,
                          hp.qp_iterations)

  return make_episodic(hp, context, correct)


def memory_samples(hp: EpisodicHparams, context: base.BuildContext) -> int:
  """n_memories rows for each of the T tasks."""
  return hp.n_memories * context.num_tasks


METHODS = {"gem": base.Method(hparams=GEMHparams, make=make, sweepable=SWEEPABLE,
                              step_sizes=("lr", "grad_clip_norm"),
                              memory_samples=memory_samples)}
