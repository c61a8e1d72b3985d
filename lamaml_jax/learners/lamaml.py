"""La-MAML and its variants from one implementation (paper §4-5, appendix B).

| method  | α learned | weight step                         | meta-loss | replay push        |
|---------|-----------|-------------------------------------|-----------|--------------------|
| lamaml  | yes       | θ ← θ − relu(α_new) ⊙ clip(∇θ L)    | mean      | first epoch+glance |
| sync    | yes       | θ ← θ − β clip(∇θ L)                | mean      | first epoch+glance |
| cmaml   | no (α=α0) | θ ← θ − β clip(∇θ L)                | mean      | first epoch+glance |
| laer    | yes       | θ ← θ − relu(α_new) ⊙ clip(∇θ ℓ_ER) | last      | every call         |

All four are values of `LaMAMLHparams`; `preset(method)` gives the table's choices
and a config may override any of them. The scalar step sizes `SWEEPABLE` can also
be given to `init` as arrays, so that a vmapped program trains many settings at
once (they live in the state: α in `lrs`, η and β in the optax states through
`optax.inject_hyperparams`).

One `observe` call, per glance g = 0..glances-1:
  1. shuffle the stream batch (B samples of task t);
  2. meta batch = up to R replay samples (drawn before this glance's push) + stream;
  3. k inner steps on consecutive slices of the stream (`lookahead`), meta-loss;
  4. clip ∇α and ∇θ separately to global norm `grad_clip_norm`;
  5. α ← α − η ∇α if α is learned; then the weight step of the table;
  6. reservoir-push the stream batch (after glance 0 of epoch 0, or every call).
"""
from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from lamaml_jax import lookahead
from lamaml_jax import mlp_lookahead
from lamaml_jax import replay as replay_lib
from lamaml_jax.learners import base
from lamaml_jax.types import Batch, Params, PRNGKey

VARIANTS = ("lamaml", "sync", "cmaml", "laer")
SWEEPABLE = ("alpha_init", "opt_lr", "opt_wt")


@dataclasses.dataclass(frozen=True)
class LaMAMLHparams:
  """Hyperparameters; names follow the official flags.

  Attributes:
    alpha_init: initial value α0 of every per-parameter learning rate.
    opt_lr: η, SGD step size of the learning rates (official `--opt_lr`).
    opt_wt: β, SGD step size of the weights for sync updates (`--opt_wt`).
    learn_lr: learn α (La-MAML, Sync, La-ER) or keep it fixed (C-MAML).
    sync_update: weight step θ ← θ − β∇θ (Sync, C-MAML) instead of the
      asynchronous θ ← θ − relu(α)⊙∇θ (La-MAML, La-ER).
    weight_grad: 'meta' (∇θ of the meta-loss) or 'replay' (La-ER: gradient of the
      plain replay loss on the meta batch at θ0).
    glances: meta-updates per incoming batch (single-pass setting).
    inner_steps: k; the stream batch is split into k slices of B/k samples.
    first_order: drop second-order terms in the hypergradient.
    grad_clip_norm: global-norm clip of ∇θ and of ∇α (separately).
    inner_grad_clamp: elementwise clamp of inner gradients (None: off).
    relu_inner_lrs: relu(α) in the inner step (official MNIST code).
    meta_loss: 'mean' over inner steps (official) or 'last' (Algorithm 1).
    replay_batch_size: replay samples R in the meta batch.
    memory_size: reservoir capacity.
    use_old_task_memory: replay from the snapshot of the buffer taken when the
      task switched (official CIFAR `--use_old_task_memory`); False replays from the
      live buffer (what the official MNIST code does even with the flag set, since
      it aliases the two).
    push_every_call: push every stream batch after the update (ER, La-ER) instead
      of only during the first glance of the first epoch.
    reservoir_inclusive_randint: the official reservoir's off-by-one slot draw
      (`replay` module docstring); False: exact reservoir sampling.
    replay_with_replacement: draw replay samples with replacement (official);
      False: without.
    scan_unroll: unroll of the inner `lax.scan`; 0 unrolls it fully (see
      `LookaheadOptions.unroll`).
    mlp_fast_path: compute first-order meta-gradients of an MLP with
      `mlp_lookahead` (same numbers, faster on CPU: BUILD.md) where it applies:
      first order, mean meta-loss, no inner clamp, single-sample inner slices.
    hypergrad_impl: 'fast' (default): first order by forward accumulation,
      second order by the explicit reverse pass, the MLP fast path where it
      applies (`lookahead` module docstring); 'autodiff': `jax.grad` through the
      unrolled `lax.scan` (the design card's formulation). Same numbers to float
      rounding; speed and memory in BUILD.md.
    remat_inner_steps: with 'autodiff', `jax.checkpoint` each inner step (keep
      the k fast-weight sets only, recompute activations in the backward pass).
  """
  alpha_init: float = 0.15
  opt_lr: float = 0.3
  opt_wt: float = 0.1
  learn_lr: bool = True
  sync_update: bool = False
  weight_grad: Literal["meta", "replay"] = "meta"
  glances: int = 5
  inner_steps: int = 10
  first_order: bool = True
  grad_clip_norm: float = 2.0
  inner_grad_clamp: Optional[float] = None
  relu_inner_lrs: bool = True
  meta_loss: Literal["mean", "last"] = "mean"
  replay_batch_size: int = 10
  memory_size: int = 200
  use_old_task_memory: bool = False
  push_every_call: bool = False
  reservoir_inclusive_randint: bool = False
  replay_with_replacement: bool = False
  scan_unroll: int = 0
  mlp_fast_path: bool = True
  hypergrad_impl: Literal["fast", "autodiff"] = "fast"
  remat_inner_steps: bool = False

  def __post_init__(self):
    base.check_positive("alpha_init", self.alpha_init)
    base.check_positive("opt_lr", self.opt_lr)
    base.check_positive("opt_wt", self.opt_wt)
    base.check_positive("grad_clip_norm", self.grad_clip_norm, allow_zero=False)
    for name in ("glances", "inner_steps", "memory_size"):
      base.check_at_least(name, getattr(self, name), 1)
    if self.replay_batch_size < 0:
      raise ValueError(f"replay_batch_size must be >= 0, got {self.replay_batch_size!r}.")
    base.check_replay_fits(self.replay_batch_size, self.memory_size)
    if self.weight_grad not in ("meta", "replay"):
      raise ValueError(f"weight_grad must be 'meta' or 'replay', got {self.weight_grad!r}.")
    if self.weight_grad == "replay" and self.sync_update:
      raise ValueError("weight_grad='replay' (La-ER) needs sync_update=False.")
    if not self.learn_lr and self.weight_grad == "replay":
      raise ValueError("weight_grad='replay' (La-ER) needs learn_lr=True.")
    lookahead.check_hypergrad_impl(self.hypergrad_impl, self.remat_inner_steps)

  @property
  def lookahead_options(self) -> lookahead.LookaheadOptions:
    return lookahead.LookaheadOptions(
        first_order=self.first_order, grad_clamp=self.inner_grad_clamp,
        relu_lrs=self.relu_inner_lrs, meta_loss=self.meta_loss,
        unroll=self.scan_unroll if self.scan_unroll > 0 else True,
        **lookahead.hypergrad_options(self.hypergrad_impl, self.remat_inner_steps))


def preset(method: str) -> dict:
  """The structural choices that define each variant (see the module table)."""
  presets = {
      "lamaml": dict(learn_lr=True, sync_update=False, weight_grad="meta"),
      "sync": dict(learn_lr=True, sync_update=True, weight_grad="meta"),
      "cmaml": dict(learn_lr=False, sync_update=True, weight_grad="meta"),
      "laer": dict(learn_lr=True, sync_update=False, weight_grad="replay",
                   meta_loss="last", push_every_call=True),
  }
  if method not in presets:
    raise ValueError(f"Unknown La-MAML variant {method!r}; choose one of {VARIANTS}.")
  return presets[method]


class LaMAMLState(NamedTuple):
  """Everything a La-MAML learner carries between calls.

  params/lrs: θ and α (same structure); lr_opt_state/wt_opt_state: optax states of
  the α and β SGD steps; memory: live reservoir; old_memory: its snapshot at the
  last task switch; task: [] current task; step: [] meta-updates so far; key: PRNG.
  """
  params: Params
  lrs: Params
  lr_opt_state: optax.OptState
  wt_opt_state: optax.OptState
  memory: replay_lib.ReplayBuffer
  old_memory: replay_lib.ReplayBuffer
  task: jax.Array
  step: jax.Array
  key: PRNGKey


def make(hp: LaMAMLHparams, context: base.BuildContext) -> base.Learner:
  """Builds the learner (pure functions; the runner compiles them)."""
  network, layout = context.network, context.heads
  loss_fn = base.make_loss(network, layout)
  options = hp.lookahead_options
  sgd = optax.inject_hyperparams(optax.sgd)
  lr_tx, wt_tx = sgd(learning_rate=hp.opt_lr), sgd(learning_rate=hp.opt_wt)

  def check_batch(batch: Batch):
    lookahead.check_inner_steps(hp.inner_steps, batch.y.shape[0])

  def init(key: PRNGKey, example: Batch, **sweep: jax.Array) -> LaMAMLState:
    """Initial state; `sweep` may override the `SWEEPABLE` step sizes (scalars)."""
    check_batch(example)
    values = base.sweep_values(hp, sweep, SWEEPABLE)
    init_key, key = jax.random.split(key)
    params = network.init(init_key, example.x)["params"]
    lrs = jax.tree_util.tree_map(
        lambda p: jnp.full_like(p, values["alpha_init"]), params)
    lr_opt_state, wt_opt_state = lr_tx.init(lrs), wt_tx.init(params)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype  # float64 in x64 mode
    lr_opt_state.hyperparams["learning_rate"] = jnp.asarray(values["opt_lr"], dtype)
    wt_opt_state.hyperparams["learning_rate"] = jnp.asarray(values["opt_wt"], dtype)
    memory = replay_lib.init(hp.memory_size, example.x.shape[1:], example.x.dtype)
    return LaMAMLState(
        params=params, lrs=lrs, lr_opt_state=lr_opt_state,
        wt_opt_state=wt_opt_state, memory=memory,
        old_memory=jax.tree_util.tree_map(jnp.copy, memory),  # distinct buffers
        task=jnp.zeros((), jnp.int32), step=jnp.zeros((), jnp.int32), key=key)

  def meta_gradients(params, lrs, inner, meta_batch):
    """The meta batch is [replay; stream], so the stream starts at row R."""
    slice_size = inner.y.shape[1]
    if (hp.mlp_fast_path and hp.hypergrad_impl == "fast"
        and mlp_lookahead.applicable(network, options, slice_size)):
      stream_offset = meta_batch.y.shape[0] - hp.inner_steps * slice_size
      return mlp_lookahead.meta_gradients(
          params, lrs, inner, meta_batch, options, layout,
          wrt_lrs=hp.learn_lr, stream_offset=stream_offset)
    return lookahead.meta_gradients(loss_fn, params, lrs, inner, meta_batch, options,
                                    wrt_lrs=hp.learn_lr)

  def meta_update(params, lrs, lr_opt_state, wt_opt_state, stream, meta_batch):
    inner = lookahead.split_into_slices(stream, hp.inner_steps)
    loss, g_w, g_a, aux = meta_gradients(params, lrs, inner, meta_batch)
    if hp.weight_grad == "replay":
      g_w = jax.grad(loss_fn)(params, meta_batch)
    g_w = base.clip_by_global_norm(g_w, hp.grad_clip_norm)
    if hp.learn_lr:
      g_a = base.clip_by_global_norm(g_a, hp.grad_clip_norm)
      updates, lr_opt_state = lr_tx.update(g_a, lr_opt_state)
      lrs = optax.apply_updates(lrs, updates)
    if hp.sync_update:
      updates, wt_opt_state = wt_tx.update(g_w, wt_opt_state)
      params = optax.apply_updates(params, updates)
    else:
      params = jax.tree_util.tree_map(
          lambda p, a, g: p - jax.nn.relu(a) * g, params, lrs, g_w)
    return params, lrs, lr_opt_state, wt_opt_state, loss, aux

  def observe(state: LaMAMLState, batch: Batch, epoch: jax.Array
              ) -> tuple[LaMAMLState, dict]:
    check_batch(batch)
    b = batch.y.shape[0]
    task = batch.task[0]
    old_memory = state.old_memory
    if hp.use_old_task_memory:  # snapshot the buffer when the task changes
      old_memory = base.tree_select(task != state.task, state.memory, old_memory)
    key, glance_key, push_key = jax.random.split(state.key, 3)

    # Every glance's random draws at once: one random-bits kernel, not one a glance.
    perm_keys, replay_keys = jnp.moveaxis(jax.vmap(jax.random.split)(
        jax.random.split(glance_key, hp.glances)), 1, 0)
    perms = jax.vmap(lambda k: jax.random.permutation(k, b))(perm_keys)
    replay_scores = jax.vmap(lambda k: replay_lib.selection_scores(
        k, hp.memory_size))(replay_keys)
    # Glance 0 of epoch 0 pushes its shuffled stream. The slots depend only on the
    # count of items seen so far, and later glances sample as if the push were
    # done; the buffer itself is written once, after the glances.
    if not hp.push_every_call:
      pushed = jax.tree_util.tree_map(lambda a: a[perms[0]], batch)
      push_slots = replay_lib.reservoir_slots(
          state.memory, push_key, pushed.weight, hp.reservoir_inclusive_randint)

    def replay_batch(index, scores):
      if hp.push_every_call:  # pushed after the glances
        sample = replay_lib.sample_by_scores(state.memory, scores, hp.replay_batch_size,
                                             hp.replay_with_replacement)
      else:
        sample = replay_lib.sample_after_write(
            state.memory, push_slots, pushed, (epoch == 0) & (index > 0), scores,
            hp.replay_batch_size, hp.replay_with_replacement)
      if hp.use_old_task_memory:  # tasks after the first replay the snapshot
        old = replay_lib.sample_by_scores(old_memory, scores, hp.replay_batch_size,
                                          hp.replay_with_replacement)
        sample = base.tree_select(task > 0, old, sample)
      return sample

    def glance(carry, inputs):
      index, perm, scores = inputs
      stream = jax.tree_util.tree_map(lambda a: a[perm], batch)
      meta_batch = base.concat_batches(replay_batch(index, scores), stream)
      *carry, loss, aux = meta_update(*carry, stream, meta_batch)
      return tuple(carry), {"loss": loss, "inner_loss": jnp.mean(aux["inner_loss"])}

    carry = (state.params, state.lrs, state.lr_opt_state, state.wt_opt_state)
    carry, outs = jax.lax.scan(glance, carry,
                               (jnp.arange(hp.glances), perms, replay_scores))
    params, lrs, lr_opt_state, wt_opt_state = carry
    if hp.push_every_call:
      memory = replay_lib.add(state.memory, push_key, batch,
                              hp.reservoir_inclusive_randint)
    else:
      memory = replay_lib.write(state.memory, push_slots, pushed, offered=epoch == 0)
    new_state = LaMAMLState(
        params=params, lrs=lrs, lr_opt_state=lr_opt_state,
        wt_opt_state=wt_opt_state, memory=memory, old_memory=old_memory,
        task=task.astype(jnp.int32), step=state.step + hp.glances, key=key)
    metrics = {"loss": outs["loss"][-1], "inner_loss": outs["inner_loss"][-1],
               # A NaN/inf in any gradient reaches the weights or the learning
               # rates (0 * inf is NaN too), so checking them once per call suffices.
               "finite": base.all_finite(outs["loss"], params, lrs)}
    return new_state, metrics

  def summary(state: LaMAMLState) -> dict:
    return {"meta_updates": state.step}

  return base.Learner(init=init, observe=observe,
                      predict=base.make_predict(network, layout),
                      loss=loss_fn,
                      summary=summary)


def _memory_samples(hp: LaMAMLHparams, context: base.BuildContext) -> int:
  del context
  return hp.memory_size


def _method(variant: str) -> base.Method:
  """Each variant is `LaMAMLHparams` with its preset's defaults."""
  defaults = preset(variant)
  hparams = dataclasses.make_dataclass(
      f"{variant.capitalize()}Hparams",
      [(k, type(v), dataclasses.field(default=v)) for k, v in defaults.items()],
      bases=(LaMAMLHparams,), frozen=True)
  hparams.__doc__ = f"`LaMAMLHparams` with {variant}'s preset {defaults}."
  step_sizes = ("alpha_init",) + (("opt_lr",) if defaults["learn_lr"] else ()) + (
      ("opt_wt",) if defaults["sync_update"] else ()) + ("grad_clip_norm",)
  return base.Method(hparams=hparams, make=make, sweepable=SWEEPABLE,
                     step_sizes=step_sizes, memory_samples=_memory_samples)


METHODS = {variant: _method(variant) for variant in VARIANTS}
