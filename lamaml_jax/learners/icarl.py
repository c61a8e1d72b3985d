"""iCaRL (Rebuffi et al., 2017) in the task-incremental variant of GEM's code,
which the official La-MAML code copies (its `icarl.py`).

State: θ; K exemplar slots with their distillation targets z (`exemplars`: class
group g holds slots [g·m, g·m + m), m = ⌊K / classes stored⌋).

One `observe` call on B samples of task t (the stream gives one task per batch),
per glance (then θ ← θ − lr · clip(∇θ L), global norm `grad_clip_norm`):
  L = CE(batch; head t) + λ · D,
  D = (1/C) Σ_{τ<t} Σ_{c ∈ classes(τ)} KL(softmax(z_e[τ]) ‖ softmax(f_θ(x_e)[τ])),
with e a random exemplar of class c, drawn anew each glance, v[τ] the C logits of
task τ, C = classes_per_task, λ = memory_strength. Exemplars are not replayed in
the CE. Per task τ, (1/C) Σ_c is the mean over its C samples: the official
`KLDivLoss()` (reduction 'mean': a mean over all C·C elements) times C. The
draws have a fixed shape: one exemplar of each of the min((T−1)·C, K) class
groups that can be stored while training, weighted 0 where a group is empty, so
task 0 has no distillation term.

`end_task` of task t (the task's preprocessed, unaugmented training data):
  1. m' = ⌊K / (G + C)⌋ for the G classes stored; every old class keeps the first
     m' exemplars of its herding order (`exemplars.repack`);
  2. each class c of task t herds min(m', n_c) exemplars from its n_c candidates
     (`exemplars.herd`: the running-mean criterion) on the features φ below;
  3. z ← f_θ(x) for every stored exemplar (the targets of the next tasks'
     distillation: the network of the latest task end, as iCaRL's).

`predict(x, t)`: nearest mean of exemplars among the classes of t's head that have
exemplars: −‖φ(x) − μ_c‖₂ there, −inf elsewhere (argmax: the nearest mean), μ_c
the mean φ of c's exemplars under the current θ. A task without exemplars (not
yet trained) gets `unseen_task`'s output.

Features (`features`):
  'penultimate' (default, the iCaRL paper): φ = L2-normalised penultimate
    activations, for herding and NME; class means for NME are renormalised
    (herding compares against the plain mean, as Algorithm 4 and the authors'
    code).
  'logits' (the official code): herding on the task's C logits, NME on the full
    logit vector; nothing normalised.

Options for the official code's behaviour (defaults: the correct/paper one):
  herd_on: 'task_data' (default): herd on end_task's data. 'stream' (official):
    on what the stream delivered in the task's first pass, augmented, minus the
    batch that completes the pass (it stores batches while the samples seen in
    the task are fewer than N = samples_per_task; the state then holds an
    [N, *input_shape] store).
  unseen_task: 'network' (default): the network's own masked logits. 'uniform'
    (official): 1/C on the task's logits, so argmax is the task's first class
    (the official checks only that class's exemplars; here any of the task's).
  shrink_m_to_smallest_class: official True: a class of the task with n_c < m'
    candidates lowers m' to n_c for every class, old ones included; False
    (default): that class alone keeps n_c.
The official code's other behaviours are kept: the task end is an explicit hook
here, not a sample count; the distillation targets are refreshed at every task
end; herding ties go to the lowest index (torch's unstable sort decides them
there).
"""
from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp

from lamaml_jax import exemplars
from lamaml_jax import heads
from lamaml_jax.learners import base
from lamaml_jax.learners import online
from lamaml_jax.types import Batch, Metrics, Params, PRNGKey

FEATURES = ("penultimate", "logits")
HERD_ON = ("task_data", "stream")
UNSEEN_TASK = ("network", "uniform")


@dataclasses.dataclass(frozen=True)
class ICaRLHparams(online.OnlineHparams):
  """Hyperparameters (defaults: the official CIFAR-100 script's, with the
  paper's behaviour for every option; module docstring).

  Attributes:
    lr, glances: as `OnlineHparams`.
    grad_clip_norm: global-norm clip of the gradient (None: off).
    memory_size: K exemplar slots shared by all classes (official `n_memories`).
    memory_strength: λ, weight of the distillation term.
    features: 'penultimate' or 'logits' (module docstring).
    herd_on: 'task_data' or 'stream' (module docstring).
    unseen_task: 'network' or 'uniform' (module docstring).
    shrink_m_to_smallest_class: the official global-m shrink (module docstring).
    feature_chunk_size: samples per forward pass when computing features at a
      task end (memory only; the results are the same).
    distill_buckets: forward only the past tasks' exemplars (in buckets of
      whole tasks, `distillation_buckets`) instead of one per class of every
      task but the last; speed only (the same update up to float rounding), at
      the cost of a compiled branch per bucket.
  """
  lr: float = 0.03
  grad_clip_norm: Optional[float] = 2.0
  memory_size: int = 200
  memory_strength: float = 1.0
  features: Literal["penultimate", "logits"] = "penultimate"
  herd_on: Literal["task_data", "stream"] = "task_data"
  unseen_task: Literal["network", "uniform"] = "network"
  shrink_m_to_smallest_class: bool = False
  feature_chunk_size: int = 256
  distill_buckets: bool = True

  def __post_init__(self):
    super().__post_init__()
    base.check_at_least("memory_size", self.memory_size, 1)
    base.check_positive("memory_strength", self.memory_strength)
    for name, valid in (("features", FEATURES), ("herd_on", HERD_ON),
                        ("unseen_task", UNSEEN_TASK)):
      if getattr(self, name) not in valid:
        raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}.")
    if not isinstance(self.shrink_m_to_smallest_class, bool):
      raise ValueError("shrink_m_to_smallest_class must be True or False, got "
                       f"{self.shrink_m_to_smallest_class!r}.")
    base.check_at_least("feature_chunk_size", self.feature_chunk_size, 1)


class TaskStore(NamedTuple):
  """The current task's stream as delivered (herd_on='stream'): x [N, ...],
  y [N] int32, count [] int32 rows filled (a prefix)."""
  x: jax.Array
  y: jax.Array
  count: jax.Array


class ICaRLState(NamedTuple):
  """params: θ; lr: [] step size; memory: the exemplars; targets: [K, O]
  distillation targets z of the slots (0 where empty); stream: `TaskStore` or
  None (herd_on='task_data'); seen: [] samples of the current task observed;
  step: [] SGD steps; key: PRNG key of the exemplar draws."""
  params: Params
  lr: jax.Array
  memory: exemplars.ExemplarStore
  targets: jax.Array
  stream: Optional[TaskStore]
  seen: jax.Array
  step: jax.Array
  key: PRNGKey


def distillation_loss(logits: jax.Array, targets: jax.Array, task: jax.Array,
                      weight: jax.Array, classes_per_task: int) -> jax.Array:
  """[] (1/C) Σ_i w_i KL(softmax(z_i[τ_i]) ‖ softmax(f_i[τ_i])).

  Args:
    logits: [S, O] network outputs f of the S exemplars.
    targets: [S, O] their stored outputs z (constants).
    task: [S] int task τ_i of each exemplar; v[τ] = its C logits.
    weight: [S] 0/1 (0: no exemplar drawn).
    classes_per_task: C.
  """
  c = classes_per_task
  idx = task[:, None] * c + jnp.arange(c)[None, :]
  own = jnp.take_along_axis(logits, idx, axis=1)
  z = jax.lax.stop_gradient(jnp.take_along_axis(targets, idx, axis=1))
  log_p = jax.nn.log_softmax(z, axis=1)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(own, axis=1)), axis=1)
  return jnp.sum(weight.astype(kl.dtype) * kl) / c


def distillation_buckets(num_groups: int, classes_per_task: int, buckets: bool
                         ) -> list[int]:
  """Exemplar rows a glance may forward: with `buckets`, whole past tasks in
  steps of about 1.5x (1, 2, 3, 5, 8, 12, 18, ... tasks, then all num_groups);
  else all num_groups. A task t uses the smallest bucket ≥ t·C; the groups past
  it only ever have weight 0, so every bucket gives the same update (up to
  float rounding) at a cost that grows with t instead of being the largest."""
  if not buckets:
    return [num_groups]
  sizes, tasks = [], 1
  while tasks * classes_per_task < num_groups:
    sizes.append(tasks * classes_per_task)
    tasks = max(tasks + 1, int(tasks * 1.5))
  return sizes + [num_groups]


def chunked_apply(fn, x: jax.Array, chunk: int) -> jax.Array:
  """fn(x) computed `chunk` rows at a time (`lax.map`; padded rows dropped)."""
  n = x.shape[0]
  chunk = min(chunk, n)
  pad = -n % chunk
  xp = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
  out = jax.lax.map(fn, xp.reshape(((n + pad) // chunk, chunk, *x.shape[1:])))
  return out.reshape((n + pad, *out.shape[2:]))[:n]


def make(hp: ICaRLHparams, context: base.BuildContext) -> base.Learner:
  """Builds the learner (pure functions; the runner compiles them).

  Raises:
    ValueError: no task-incremental heads, or fewer slots than a task's classes.
  """
  cpt = context.classes_per_task
  if cpt is None:
    raise ValueError("iCaRL needs task-incremental heads: use mnist5k_split, cifar100 "
                     "or tinyimagenet.")
  if hp.memory_size < cpt:
    raise ValueError(f"memory_size={hp.memory_size} is below the {cpt} classes of a "
                     "task: iCaRL needs at least one exemplar slot per class.")
  network, layout = context.network, context.heads
  k_slots, outputs = hp.memory_size, context.num_outputs
  max_picks = k_slots // cpt  # m of the first task: the largest stride
  # Class groups stored while training (all but the last task's), and ≤ K.
  num_groups = max(1, min((context.num_tasks - 1) * cpt, k_slots))
  row_buckets = distillation_buckets(num_groups, cpt, hp.distill_buckets)
  penultimate = hp.features == "penultimate"

  def logits_of(params, x):
    return network.apply({"params": params}, x)

  def nme_features(params, x):
    """[n, F] φ of NME: normalised penultimate features, or all the logits."""
    if penultimate:
      return exemplars.normalize(network.apply({"params": params}, x, features=True))
    return logits_of(params, x)

  def herd_features(params, x, task):
    """[n, F] φ of herding: as NME's, but the task's C logits for 'logits'."""
    feats = chunked_apply(lambda xc: nme_features(params, xc), x, hp.feature_chunk_size)
    if penultimate:
      return feats
    return jax.lax.dynamic_slice_in_dim(feats, task * cpt, cpt, axis=1)

  def init(key: PRNGKey, example: Batch, **sweep: jax.Array) -> ICaRLState:
    values = base.sweep_values(hp, sweep, online.SWEEPABLE)
    init_key, key = jax.random.split(key)
    shape, dtype = example.x.shape[1:], example.x.dtype
    stream = None
    if hp.herd_on == "stream":
      n = context.samples_per_task
      stream = TaskStore(x=jnp.zeros((n, *shape), dtype), y=jnp.zeros((n,), jnp.int32),
                         count=jnp.zeros((), jnp.int32))
    return ICaRLState(
        params=online.init_params(network, init_key, example), lr=values["lr"],
        memory=exemplars.init(k_slots, shape, dtype),
        targets=jnp.zeros((k_slots, outputs), jnp.float32), stream=stream,
        seen=jnp.zeros((), jnp.int32), step=jnp.zeros((), jnp.int32), key=key)

  def push_stream(store: TaskStore, seen: jax.Array, batch: Batch) -> TaskStore:
    """Appends the batch's samples (weight > 0) while seen + their number < N."""
    n, b = store.y.shape[0], batch.y.shape[0]
    keep = batch.weight > 0
    kept = jnp.sum(keep, dtype=jnp.int32)
    order = jnp.argsort(~keep, stable=True)
    write = (jnp.arange(b) < kept) & (seen + kept < n)
    rows = jnp.where(write, store.count + jnp.arange(b), n)  # n: dropped
    return TaskStore(
        x=store.x.at[rows].set(batch.x[order].astype(store.x.dtype), mode="drop"),
        y=store.y.at[rows].set(batch.y[order], mode="drop"),
        count=store.count + jnp.where(seen + kept < n, kept, 0))

  def observe(state: ICaRLState, batch: Batch, epoch: jax.Array
              ) -> tuple[ICaRLState, Metrics]:
    del epoch  # the stream store counts the task's samples instead
    task, b = batch.task[0], batch.y.shape[0]
    memory = state.memory
    key, glance_key = jax.random.split(state.key)

    def glance_loss(params, key, rows):
      # The same draw whatever `rows` (the first rows of all groups' draw).
      slots, drawn = exemplars.sample_per_group(memory, key, num_groups)
      slots, drawn = slots[:rows], drawn[:rows]
      ex_task = memory.y[slots] // cpt
      weight = (drawn & (ex_task < task)).astype(jnp.float32)
      logits = logits_of(params, jnp.concatenate([batch.x, memory.x[slots]]))
      ce = heads.cross_entropy(logits[:b], batch, layout)
      distill = distillation_loss(logits[b:], state.targets[slots], ex_task, weight,
                                  cpt)
      return ce + hp.memory_strength * distill, {"ce": ce, "distill": distill}

    def glances(rows):
      return lambda params: online.sgd_glances(
          lambda p, k: glance_loss(p, k, rows), params, state.lr, hp.glances,
          hp.grad_clip_norm, jax.random.split(glance_key, hp.glances))

    # Groups of the past tasks come first: forward only the smallest bucket that
    # holds them (the rest would have weight 0).
    bucket = jnp.searchsorted(jnp.asarray(row_buckets), task * cpt)
    params, metrics = jax.lax.switch(
        jnp.minimum(bucket, len(row_buckets) - 1),
        [glances(rows) for rows in row_buckets], state.params)
    stream = state.stream
    if stream is not None:
      stream = push_stream(stream, state.seen, batch)
    seen = state.seen + jnp.sum(batch.weight > 0, dtype=jnp.int32)
    return state._replace(params=params, stream=stream, seen=seen,
                          step=state.step + hp.glances, key=key), metrics

  def end_task(state: ICaRLState, task_x: jax.Array, task_y: jax.Array,
               task: jax.Array) -> ICaRLState:
    """Reduces the old exemplar sets, herds the task's, refreshes the targets."""
    if state.stream is not None:
      x, y = state.stream.x, state.stream.y
      available = jnp.arange(y.shape[0]) < state.stream.count
    else:
      x, y, available = task_x, task_y, jnp.ones(task_y.shape, bool)
    labels = task * cpt + jnp.arange(cpt)
    members = available[None, :] & (y[None, :] == labels[:, None])  # [C, N]
    memory = state.memory
    per_class = (k_slots // (memory.num_classes + cpt)).astype(jnp.int32)
    keep = per_class
    if hp.shrink_m_to_smallest_class:
      keep = jnp.minimum(per_class, jnp.min(jnp.sum(members, 1, dtype=jnp.int32)))
    feats = herd_features(state.params, x, task)
    picks, picked = jax.vmap(exemplars.herd, in_axes=(None, 0, None, None))(
        feats, members, keep, max_picks)
    memory = exemplars.repack(memory, per_class, keep)
    memory = exemplars.add_classes(memory, x, labels, picks, picked)
    targets = chunked_apply(lambda xc: logits_of(state.params, xc), memory.x,
                            hp.feature_chunk_size)
    stream = state.stream
    if stream is not None:
      stream = stream._replace(count=jnp.zeros((), jnp.int32))
    return state._replace(
        memory=memory, targets=jnp.where(memory.valid[:, None], targets, 0.0),
        stream=stream, seen=jnp.zeros((), jnp.int32))

  def predict(state: ICaRLState, x: jax.Array, task: jax.Array) -> jax.Array:
    """[B, O] −distance to the nearest class mean inside the task's head (−inf
    elsewhere), or `unseen_task`'s output where its classes have no exemplars.
    The exemplars' features are recomputed under the current θ (K forward
    passes per call)."""
    memory = state.memory
    inside = jnp.isfinite(heads.mask_logits(jnp.zeros((1, outputs)), task, layout))[0]
    has = jax.ops.segment_sum(memory.valid.astype(jnp.int32), memory.y,
                              num_segments=outputs) > 0
    allowed = inside & has
    n = x.shape[0]

    def nearest_mean(_):
      feats = nme_features(state.params, jnp.concatenate([x, memory.x.astype(x.dtype)]))
      means, _ = exemplars.class_means(feats[n:], memory, outputs,
                                       renormalize=penultimate)
      return exemplars.nearest_mean_scores(feats[:n], means, allowed)

    def unseen(_):
      if hp.unseen_task == "uniform":
        return jnp.broadcast_to(jnp.where(inside, 1.0 / cpt, -jnp.inf), (n, outputs))
      return heads.mask_logits(logits_of(state.params, x), task, layout)

    return jax.lax.cond(jnp.any(allowed), nearest_mean, unseen, None)

  def summary(state: ICaRLState) -> Metrics:
    return {**online.summary(state),
            "exemplars": jnp.sum(state.memory.valid, dtype=jnp.int32),
            "exemplars_per_class": state.memory.per_class}

  return base.Learner(init=init, observe=observe, predict=predict,
                      loss=base.make_loss(network, layout),
                      end_task=end_task, summary=summary)


METHODS = {"icarl": base.Method(hparams=ICaRLHparams, make=make,
                                sweepable=online.SWEEPABLE,
                                step_sizes=("lr", "grad_clip_norm"),
                                memory_samples=lambda hp, context: hp.memory_size)}
