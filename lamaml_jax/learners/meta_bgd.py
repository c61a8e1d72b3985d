"""Meta-BGD: C-MAML whose weights are Gaussian and updated by Bayesian Gradient
Descent (appendix H; the official `meta-bgd.py` with `optimizers_lib/bgd_optimizer.py`).

Every weight has a mean μ and a standard deviation σ (`bgd`); so has every inner
learning rate α when `bgd_alpha='bayesian'` (the official code), while 'fixed'
keeps α = alpha_init constant (appendix H: "the inner-loop stays same as C-MAML
(constant LR)"). One `observe` call on a stream batch of B samples of task t,
per glance g = 0..G−1:
  1. draw N = mc_iters noise samples ε⁽ⁿ⁾ and set θ⁽ⁿ⁾ = μ + σ ⊙ ε⁽ⁿ⁾ (and α⁽ⁿ⁾
     likewise, or α = alpha_init);
  2. shuffle the stream batch; meta batch = min(R, |M|) replay samples + the B
     stream samples (each scored on its own head);
  3. C-MAML's look-ahead at θ⁽ⁿ⁾ (`lookahead.meta_gradients`, second order, mean
     meta-loss over the steps): k inner steps θ ← θ − α ⊙ clamp(∇ℓ) on the
     `torch.split` slices of ⌈B/k⌉ samples (k = 3, B = 10: 4, 4, 2;
     `lookahead.pad_into_slices`), and the meta-loss on the meta batch after each;
  4. g⁽ⁿ⁾ = S · clip(∂L/∂θ⁽ⁿ⁾) (global norm), S the number of samples behind the
     mean loss (BGD wants an un-normalised loss: `grad_scale`); the same for α;
  5. BGD's closed-form step from E_g = mean_n g⁽ⁿ⁾, E_gε = mean_n g⁽ⁿ⁾ ⊙ ε⁽ⁿ⁾:
       μ ← μ − η σ² E_g,   σ ← σ √(1 + (σ E_gε / 2)²) − σ² E_gε / 2   (`bgd.update`).
Steps 1-4 are one `vmap` over the N passes. The stream batch is pushed into the
reservoir during the first glance of the first epoch (in pass 0's order), and
later glances replay from the memory with the push done. `predict` uses the means.

The official code's choices beyond the paper are options, each defaulting to the
paper or to exact BGD and set to the official value by the paper-cell configs:

| option                       | default      | official       |
|------------------------------|--------------|----------------|
| bgd_alpha                    | 'fixed'      | 'bayesian'     |
| clip_alpha_grads             | True         | False          |
| grad_scale                   | 'meta_batch' | 'stream_batch' |
| mc_fresh_data                | False        | True           |
| later_passes_see_push        | False        | True           |
| xavier_init                  | False        | True           |
| inner_grad_clamp             | None         | grad_clip_norm |
| reservoir_inclusive_randint  | False        | True           |
| replay_with_replacement      | False        | True           |

The look-ahead is always second order: the official `inner_update` builds the
graph whatever `--second_order` says.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Literal, NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from lamaml_jax import bgd
from lamaml_jax import lookahead
from lamaml_jax import replay as replay_lib
from lamaml_jax.learners import base
from lamaml_jax.types import Batch, Metrics, Params, PRNGKey

SWEEPABLE = ("alpha_init", "std_init", "mean_eta")
NoiseFn = Callable[[PRNGKey, Params, int], Params]  # `bgd.noise`
tmap = jax.tree_util.tree_map


@dataclasses.dataclass(frozen=True)
class MetaBGDHparams:
  """Hyperparameters; defaults are the run_experiments.sh CIFAR values where the
  option is a value, the paper / exact BGD where it is a quirk (module table).

  Attributes:
    alpha_init: inner learning rate α (its initial mean when 'bayesian').
    std_init: σ₀ of every weight (and α) at the start (`--std_init`).
    mean_eta: η of BGD's mean step μ ← μ − η σ² E_g (`--mean_eta`).
    mc_iters: N Monte Carlo weight samples per glance (`--train_mc_iters`).
    glances: BGD steps per incoming batch.
    inner_steps: k inner steps on slices of ⌈B/k⌉ samples (`--cifar_batches`);
      any k >= 1 (slices past the batch are empty and skipped).
    grad_clip_norm: global-norm clip of each pass's ∂L/∂θ (None: off).
    clip_alpha_grads: clip ∂L/∂α too, separately, to grad_clip_norm (the La-MAML
      family's rule and the text's "clip all gradients at 2.0"); the official
      code clips only the weights' gradients (its `parameters()` omits α).
    inner_grad_clamp: elementwise clamp of the inner gradients (None: off; the
      official code clamps at grad_clip_norm).
    replay_batch_size: R replay samples in the meta batch (0: none).
    memory_size: reservoir capacity.
    bgd_alpha: 'fixed' α = alpha_init (appendix H) or 'bayesian': α has its own
      μ_α (init alpha_init) and σ_α (init std_init), is sampled with the weights
      and BGD-updated from ∂L/∂α (official: α is in `named_parameters()`).
    grad_scale: S in g = S · ∂L/∂θ, making the mean meta-loss a sum as BGD
      expects: 'meta_batch' the real samples the meta-loss averages over
      (min(R, |M|) + B), or 'stream_batch' the B stream samples only (official
      `aggregate_grads(batch_size=B)`).
    mc_fresh_data: each pass reshuffles the stream batch and draws its own replay
      sample (official); False: the N passes of a glance share one shuffle and one
      replay draw, so that they estimate BGD's expectation over the weights of
      one loss.
    later_passes_see_push: in the call's first glance, passes 1..N−1 replay from
      the memory with this call's push done (official: it pushes during pass 0);
      False: every pass of that glance sees the memory as it was before the call.
    xavier_init: official `--xav_init`: Xavier-normal weights, conv biases
      N(0, 2 / (1 + 9 C_out)), dense biases 0; False: the networks' Kaiming init.
    reservoir_inclusive_randint: the official reservoir's off-by-one slot draw
      (`replay` module docstring); False: exact reservoir sampling.
    replay_with_replacement: draw replay samples with replacement (official).
    scan_unroll: unroll of the inner `lax.scan`; 0 unrolls it fully.
    hypergrad_impl, remat_inner_steps: as La-MAML's (`lamaml.LaMAMLHparams`):
      the explicit second-order reverse pass ('fast') or `jax.grad` through
      the unroll ('autodiff', optionally rematerialising each inner step).
  """
  alpha_init: float = 0.1
  std_init: float = 0.02
  mean_eta: float = 50.0
  mc_iters: int = 2
  glances: int = 1
  inner_steps: int = 3
  grad_clip_norm: Optional[float] = 2.0
  clip_alpha_grads: bool = True
  inner_grad_clamp: Optional[float] = None
  replay_batch_size: int = 10
  memory_size: int = 200
  bgd_alpha: Literal["fixed", "bayesian"] = "fixed"
  grad_scale: Literal["meta_batch", "stream_batch"] = "meta_batch"
  mc_fresh_data: bool = False
  later_passes_see_push: bool = False
  xavier_init: bool = False
  reservoir_inclusive_randint: bool = False
  replay_with_replacement: bool = False
  scan_unroll: int = 0
  hypergrad_impl: Literal["fast", "autodiff"] = "fast"
  remat_inner_steps: bool = False

  def __post_init__(self):
    base.check_positive("alpha_init", self.alpha_init)
    base.check_positive("std_init", self.std_init, allow_zero=False)
    base.check_positive("mean_eta", self.mean_eta)
    if self.grad_clip_norm is not None:
      base.check_positive("grad_clip_norm", self.grad_clip_norm, allow_zero=False)
    if self.inner_grad_clamp is not None:
      base.check_positive("inner_grad_clamp", self.inner_grad_clamp, allow_zero=False)
    for name in ("mc_iters", "glances", "inner_steps", "memory_size"):
      base.check_at_least(name, getattr(self, name), 1)
    base.check_at_least("replay_batch_size", self.replay_batch_size, 0)
    base.check_at_least("scan_unroll", self.scan_unroll, 0)
    lookahead.check_hypergrad_impl(self.hypergrad_impl, self.remat_inner_steps)
    base.check_replay_fits(self.replay_batch_size, self.memory_size)
    if self.bgd_alpha not in ("fixed", "bayesian"):
      raise ValueError(f"bgd_alpha must be 'fixed' (constant α, the paper) or "
                       f"'bayesian' (sampled and BGD-learned, the official code), "
                       f"got {self.bgd_alpha!r}.")
    if self.grad_scale not in ("meta_batch", "stream_batch"):
      raise ValueError(f"grad_scale must be 'meta_batch' or 'stream_batch' "
                       f"(official), got {self.grad_scale!r}.")

  @property
  def lookahead_options(self) -> lookahead.LookaheadOptions:
    return lookahead.LookaheadOptions(
        first_order=False, grad_clamp=self.inner_grad_clamp, relu_lrs=False,
        meta_loss="mean", unroll=self.scan_unroll if self.scan_unroll > 0 else True,
        **lookahead.hypergrad_options(self.hypergrad_impl, self.remat_inner_steps))


class MetaBGDState(NamedTuple):
  """Everything a Meta-BGD learner carries between calls.

  weights: μ and σ of θ (trees like the network's params); lrs: μ_α and σ_α
  ('bayesian', trees like params) or [] leaves α = alpha_init and 0 ('fixed':
  a point mass, never updated); mean_eta: [] η; memory: the reservoir;
  step: [] BGD steps so far; key: PRNG key.
  """
  weights: bgd.BGDState
  lrs: bgd.BGDState
  mean_eta: jax.Array
  memory: replay_lib.ReplayBuffer
  step: jax.Array
  key: PRNGKey

  @property
  def params(self) -> Params:
    """The means: the weights `predict` uses (official `forward`: force_std=0)."""
    return self.weights.mean


def xavier_params(key: PRNGKey, params: Params) -> Params:
  """The official `--xav_init` (`model/meta/learner.py`): every kernel
  Xavier-normal, std √(2 / (fan_in + fan_out)) with a conv's fans multiplied by
  its receptive field (torch's `xavier_normal_`, untruncated); conv biases
  N(0, 2 / (1 + 9 C_out)), i.e. std √2 / √(1 + 9 C_out); dense biases 0."""
  xavier = jax.nn.initializers.variance_scaling(1.0, "fan_avg", "normal")
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  keys = dict(zip(sorted(flat), jax.random.split(key, len(flat))))
  kernels = {path[:-1]: flat[path] for path in flat if path[-1] == "kernel"}
  out = {}
  for path, value in flat.items():
    if path[-1] == "kernel":
      out[path] = xavier(keys[path], value.shape, value.dtype)
    elif path[-1] == "bias":
      kernel = kernels.get(path[:-1])
      if kernel is not None and kernel.ndim == 4:  # a conv: [kh, kw, C_in, C_out]
        std = math.sqrt(2.0) / math.sqrt(1 + 9 * value.shape[0])
        out[path] = std * jax.random.normal(keys[path], value.shape, value.dtype)
      else:
        out[path] = jnp.zeros_like(value)
    else:
      out[path] = value
  return flax.traverse_util.unflatten_dict(out)


def make(hp: MetaBGDHparams, context: base.BuildContext,
         noise_fn: NoiseFn = bgd.noise) -> base.Learner:
  """Builds the learner (pure functions; the runner compiles them).

  noise_fn: (key, tree, N) -> ε with leaves [N, *leaf.shape] (`bgd.noise`); a
  test may pass fixed noise.
  """
  network, layout = context.network, context.heads
  loss_fn = base.make_loss(network, layout)
  options = hp.lookahead_options
  bayesian = hp.bgd_alpha == "bayesian"
  num_passes, num_replay = hp.mc_iters, hp.replay_batch_size
  num_draws = num_passes if hp.mc_fresh_data else 1  # data draws per glance
  # [G, N]: whether pass n of glance g replays from the memory with this call's
  # push done (when there is one: first epoch).
  sees_push = ((np.arange(hp.glances)[:, None] > 0) |
               ((np.arange(num_passes)[None, :] > 0) & hp.later_passes_see_push))

  def init(key: PRNGKey, example: Batch, **sweep: jax.Array) -> MetaBGDState:
    """Initial state; `sweep` may override the `SWEEPABLE` scalars."""
    values = base.sweep_values(hp, sweep, SWEEPABLE)
    init_key, xavier_key, key = jax.random.split(key, 3)
    params = network.init(init_key, example.x)["params"]
    if hp.xavier_init:
      params = xavier_params(xavier_key, params)
    weights = bgd.init(params, values["std_init"])
    if bayesian:
      lrs = bgd.init(tmap(lambda p: jnp.full_like(p, values["alpha_init"]), params),
                     values["std_init"])
    else:
      lrs = bgd.BGDState(mean=tmap(lambda p: values["alpha_init"].astype(p.dtype), params),
                         std=tmap(lambda p: jnp.zeros((), p.dtype), params))
    memory = replay_lib.init(hp.memory_size, example.x.shape[1:], example.x.dtype)
    return MetaBGDState(weights=weights, lrs=lrs, mean_eta=values["mean_eta"],
                        memory=memory, step=jnp.zeros((), jnp.int32), key=key)

  def one_pass(weights, lrs, batch, memory, push, perm, scores, visible, eps_w, eps_a):
    """One Monte Carlo pass: the look-ahead at θ = μ + σ ε; returns the scaled,
    clipped gradients g = S · clip(∂L/∂θ) (and for α) and the losses."""
    push_slots, pushed = push
    stream = tmap(lambda a: a[perm], batch)
    if num_replay > 0:
      replay = replay_lib.sample_after_write(
          memory, push_slots, pushed, visible, scores, num_replay,
          hp.replay_with_replacement)
      meta_batch = base.concat_batches(replay, stream)
    else:
      meta_batch = stream
    inner = lookahead.pad_into_slices(stream, hp.inner_steps)
    theta = bgd.sample(weights, eps_w)
    alpha = bgd.sample(lrs, eps_a) if bayesian else lrs.mean
    loss, g_w, g_a, aux = lookahead.meta_gradients(
        loss_fn, theta, alpha, inner, meta_batch, options, wrt_lrs=bayesian)
    g_w = base.clip_by_global_norm(g_w, hp.grad_clip_norm)
    if bayesian and hp.clip_alpha_grads:
      g_a = base.clip_by_global_norm(g_a, hp.grad_clip_norm)
    scale = jnp.sum(meta_batch.weight if hp.grad_scale == "meta_batch"
                    else stream.weight)
    g_w = tmap(lambda g: scale * g, g_w)
    g_a = tmap(lambda g: scale * g, g_a) if bayesian else None
    live = lookahead.live_slices(inner)
    inner_loss = jnp.sum(live * aux["inner_loss"]) / jnp.maximum(jnp.sum(live), 1)
    return g_w, g_a, loss, inner_loss

  def observe(state: MetaBGDState, batch: Batch, epoch: jax.Array
              ) -> tuple[MetaBGDState, Metrics]:
    b = batch.y.shape[0]
    g_count, n = hp.glances, num_passes
    key, data_key, noise_key, push_key = jax.random.split(state.key, 4)
    # Every glance's (and, with mc_fresh_data, every pass's) shuffle and replay
    # draw at once: one random-bits kernel each.
    perm_keys, replay_keys = jnp.moveaxis(jax.vmap(jax.random.split)(
        jax.random.split(data_key, g_count * num_draws)), 1, 0)
    perms = jax.vmap(lambda k: jax.random.permutation(k, b))(perm_keys)
    scores = jax.vmap(lambda k: replay_lib.selection_scores(k, hp.memory_size))(
        replay_keys)
    perms = jnp.broadcast_to(perms.reshape(g_count, num_draws, b), (g_count, n, b))
    scores = jnp.broadcast_to(scores.reshape(g_count, num_draws, -1),
                              (g_count, n, hp.memory_size))
    # Glance 0's pass 0 pushes its shuffled stream (epoch 0 only). The slots depend
    # only on the count of items seen, and later passes / glances sample as if the
    # push were done; the buffer itself is written once, after the glances.
    pushed = tmap(lambda a: a[perms[0, 0]], batch)
    push_slots = replay_lib.reservoir_slots(
        state.memory, push_key, pushed.weight, hp.reservoir_inclusive_randint)
    visible = (epoch == 0) & sees_push  # [G, N]

    def glance(carry, inputs):
      weights, lrs = carry
      glance_perms, glance_scores, glance_visible, glance_key = inputs
      if bayesian:  # one draw for both
        eps_w, eps_a = noise_fn(glance_key, (weights.mean, lrs.mean), n)
      else:
        eps_w, eps_a = noise_fn(glance_key, weights.mean, n), None
      passes = jax.vmap(
          functools.partial(one_pass, weights, lrs, batch, state.memory,
                            (push_slots, pushed)),
          in_axes=(0, 0, 0, 0, 0 if bayesian else None))
      g_w, g_a, losses, inner_losses = passes(
          glance_perms, glance_scores, glance_visible, eps_w, eps_a)
      weights = bgd.update(weights, *bgd.expectations(g_w, eps_w), state.mean_eta)
      if bayesian:
        lrs = bgd.update(lrs, *bgd.expectations(g_a, eps_a), state.mean_eta)
      return (weights, lrs), {"loss": jnp.mean(losses),
                              "inner_loss": jnp.mean(inner_losses)}

    (weights, lrs), outs = jax.lax.scan(
        glance, (state.weights, state.lrs),
        (perms, scores, visible, jax.random.split(noise_key, g_count)))
    memory = replay_lib.write(state.memory, push_slots, pushed, offered=epoch == 0)
    new_state = state._replace(weights=weights, lrs=lrs, memory=memory,
                               step=state.step + g_count, key=key)
    metrics = {"loss": outs["loss"][-1], "inner_loss": outs["inner_loss"][-1],
               # A NaN/inf in any gradient reaches μ or σ (0 · inf is NaN too).
               "finite": base.all_finite(outs["loss"], weights, lrs)}
    return new_state, metrics

  def summary(state: MetaBGDState) -> Metrics:
    stds = jax.tree_util.tree_leaves(state.weights.std)
    count = sum(s.size for s in stds)
    return {"meta_updates": state.step,
            "weight_std_mean": sum(jnp.sum(s) for s in stds) / count,
            "weight_std_min": jnp.min(jnp.stack([jnp.min(s) for s in stds])),
            "weight_std_max": jnp.max(jnp.stack([jnp.max(s) for s in stds]))}

  return base.Learner(init=init, observe=observe,
                      predict=base.make_predict(network, layout),
                      loss=loss_fn, summary=summary)


METHODS = {"meta_bgd": base.Method(
    hparams=MetaBGDHparams, make=make, sweepable=SWEEPABLE,
    step_sizes=("mean_eta", "std_init", "alpha_init", "grad_clip_norm"),
    memory_samples=lambda hp, context: hp.memory_size)}
