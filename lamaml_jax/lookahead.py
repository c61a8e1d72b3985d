"""The look-ahead core: k inner SGD steps with per-parameter learning rates, the
meta-loss on a replay-augmented batch, and its gradients (hypergradients).

Notation (paper §4, Appendix A): weights θ0, per-parameter learning rates α,
inner batches b_0..b_{k-1} from the incoming task, meta batch b_m (replay + current).

  inner step  θ_{i+1} = θ_i − α ⊙ clamp(∇ℓ(θ_i; b_i))                     (Eq. 6)
  meta-loss   L = mean_{i=1..k} L_meta(θ_i; b_m)   (official code, 'mean')
              L = L_meta(θ_k; b_m)                  (Algorithm 1, 'last')

Gradients ∂L/∂θ0 and ∂L/∂α come from `jax.grad` through the unrolled `lax.scan`.
First order treats each inner gradient as a constant (`stop_gradient`): then
∂θ_{i+1}/∂θ_i = I and ∂θ_{i+1}/∂α = −g_i, so for k = 1
∂L/∂α = −∇L_meta(θ1) ⊙ ∇ℓ(θ0) (Appendix A's closed form).
Second order differentiates through the inner gradients (Hessian-vector terms).

First-order gradients are by default accumulated during the forward unroll
(`first_order_impl='accumulate'`) instead of by reverse-mode through it: with
S_i = Σ_{j<i} g_j and ρ = relu'(α) (1 without relu_lrs),
  ∂L/∂θ0 = mean_i ∇L_meta(θ_i),   ∂L/∂α = −ρ ⊙ mean_i ∇L_meta(θ_i) ⊙ S_i
('last': only i = k). Same numbers (tested against `jax.grad` through the
stop-gradient unroll, 'unroll'), no stored activations and no reverse loop.

Second-order gradients are by default computed by an explicit reverse pass
(`second_order_impl='hvp'`) instead of `jax.grad` through the unroll. With
c(g) the clamp, m its derivative (0 or 1; ½ at ±c, as for jnp.clip) and a = relu(α)
or α, the adjoints are
  θ̄_k = ∇L_meta(θ_k) / n,
  ā  −= θ̄_{i+1} ⊙ c(g_i),
  θ̄_i = θ̄_{i+1} − H(θ_i; b_i) (m_i ⊙ a ⊙ θ̄_{i+1}) + ∇L_meta(θ_i) / n  (i ≥ 1; 'mean'),
for i = k−1 … 0, with n = k ('mean') or 1 ('last'). The Hessian-vector products
H v reuse the residuals of the forward pass's inner gradient (`jax.vjp` of ∇ℓ),
so the inner gradients are not recomputed, and the meta-gradients are taken one at
a time. Same numbers as 'unroll' to float rounding (tested in float64), and
faster on the CIFAR net (BUILD.md, "Measurements behind the design").

Uneven slices. `split_into_slices` needs k to divide B. `pad_into_slices` splits
B samples as `torch.split(batch, s)` with s = ⌈B/k⌉ (the official Meta-BGD: k = 3
on B = 10 gives slices of 4, 4 and 2; B = 2 gives two slices of 1) and pads them
to [k, s] with rows of weight 0. A slice with no weight is not a step: with
live_i = [Σ_j w_ij > 0], every implementation computes
  θ_{i+1} = θ_i − live_i α ⊙ c(g_i),
  L = Σ_i live_i L_meta(θ_{i+1}) / Σ_i live_i   ('mean'; 'last' is L_meta(θ_k)),
which for k dividing B (all live) is the formula above. The loss must be a
weighted mean Σ w ℓ / max(Σ w, tiny) (`heads.cross_entropy`): a partly padded
slice then scores its real samples only, and an empty one stays finite (its
value is masked out, its gradient is 0).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from lamaml_jax.types import Batch, Params

LossFn = Callable[[Params, Batch], jax.Array]


@dataclasses.dataclass(frozen=True)
class LookaheadOptions:
  """Static options of the inner loop (hashable, so they can close over jit).

  Attributes:
    first_order: treat inner gradients as constants (the official `--second_order`
      flag unset).
    grad_clamp: clamp each inner-gradient element to [-c, c] (official CIFAR code:
      c = grad_clip_norm); None disables it (the official MNIST code's clamp is a
      no-op because its result is discarded).
    relu_lrs: use relu(α) in the inner step (official MNIST code) instead of raw α
      (official CIFAR code and the paper).
    meta_loss: 'mean' over the k inner steps (official La-MAML) or only the 'last'
      (Algorithm 1; La-ER).
    unroll: `lax.scan` unroll of the inner loop. XLA:CPU runs convolutions in a
      rolled loop on a slow path (BUILD.md), so the default unrolls fully.
    first_order_impl: 'accumulate' (forward accumulation, see module docstring) or
      'unroll' (`jax.grad` through the stop-gradient unroll; the reference).
    second_order_impl: 'hvp' (explicit reverse pass, see module docstring) or
      'unroll' (`jax.grad` through the unroll; the reference).
    remat: with `jax.grad` through the unroll ('unroll' above), rematerialise
      each inner step (`jax.checkpoint`): the backward pass keeps only the k
      fast-weight sets and recomputes each step's activations from them.
  """
  first_order: bool = True
  grad_clamp: Optional[float] = None
  relu_lrs: bool = False
  meta_loss: Literal["mean", "last"] = "mean"
  unroll: Union[int, bool] = True
  first_order_impl: Literal["accumulate", "unroll"] = "accumulate"
  second_order_impl: Literal["hvp", "unroll"] = "hvp"
  remat: bool = False

  def __post_init__(self):
    if self.meta_loss not in ("mean", "last"):
      raise ValueError(f"meta_loss must be 'mean' or 'last', got {self.meta_loss!r}.")
    if self.first_order_impl not in ("accumulate", "unroll"):
      raise ValueError("first_order_impl must be 'accumulate' or 'unroll', got "
                       f"{self.first_order_impl!r}.")
    if self.second_order_impl not in ("hvp", "unroll"):
      raise ValueError("second_order_impl must be 'hvp' or 'unroll', got "
                       f"{self.second_order_impl!r}.")
    if self.grad_clamp is not None and not self.grad_clamp > 0:
      raise ValueError(f"grad_clamp must be positive or None, got {self.grad_clamp}.")


def check_hypergrad_impl(impl: str, remat: bool) -> None:
  """Raises ValueError for an unknown `hypergrad_impl` or remat without autodiff."""
  if impl not in ("fast", "autodiff"):
    raise ValueError(f"hypergrad_impl must be 'fast' or 'autodiff', got {impl!r}.")
  if remat and impl != "autodiff":
    raise ValueError("remat_inner_steps applies to hypergrad_impl='autodiff' only "
                     "(the 'fast' implementations store no inner activations).")


def hypergrad_options(impl: str, remat: bool) -> dict:
  """`LookaheadOptions` fields of a `hypergrad_impl` (`learners.lamaml.LaMAMLHparams`)."""
  if impl == "autodiff":
    return dict(first_order_impl="unroll", second_order_impl="unroll", remat=remat)
  return {}


def inner_gradient(loss_fn: LossFn, params: Params, batch: Batch,
                   options: LookaheadOptions) -> tuple[jax.Array, Params]:
  """(ℓ(θ; batch), g) with g = clamp(∇ℓ), a constant under first order."""
  loss, grads = jax.value_and_grad(loss_fn)(params, batch)
  if options.first_order:
    grads = jax.lax.stop_gradient(grads)
  if options.grad_clamp is not None:
    c = options.grad_clamp
    grads = jax.tree_util.tree_map(lambda g: jnp.clip(g, -c, c), grads)
  return loss, grads


def apply_inner_step(params: Params, lrs: Params, grads: Params,
                     options: LookaheadOptions) -> Params:
  """θ − a ⊙ g with a = relu(α) if `relu_lrs` else α."""
  if options.relu_lrs:
    lrs = jax.tree_util.tree_map(jax.nn.relu, lrs)
  return jax.tree_util.tree_map(lambda p, a, g: p - a * g, params, lrs, grads)


def inner_step(loss_fn: LossFn, params: Params, lrs: Params, batch: Batch,
               options: LookaheadOptions) -> tuple[Params, jax.Array]:
  """One inner SGD step θ' = θ − α ⊙ g with g = clamp(∇ℓ(θ; batch)).

  Returns:
    (θ', ℓ(θ; batch)).
  """
  loss, grads = inner_gradient(loss_fn, params, batch, options)
  return apply_inner_step(params, lrs, grads, options), loss


def lookahead_loss(loss_fn: LossFn, params: Params, lrs: Params,
                   inner_batches: Batch, meta_batch: Batch,
                   options: LookaheadOptions) -> tuple[jax.Array, dict]:
  """Runs the k-step unroll and returns the meta-loss.

  Args:
    loss_fn: (params, batch) -> scalar loss.
    params: θ0.
    lrs: α, same structure as params (or leaves broadcasting against them).
    inner_batches: Batch whose leaves have a leading axis k: [k, s, ...]
      (`split_into_slices`, or `pad_into_slices` for uneven slices).
    meta_batch: Batch [M, ...] scored after each inner step.
    options: see `LookaheadOptions`.

  Returns:
    (meta-loss, aux) with aux = {'inner_loss': [k], 'meta_losses': [k] or [1],
    'fast_params': θ_k}. Entries of empty slices (module docstring) are
    computed but take no part in the meta-loss.
  """
  with_meta = options.meta_loss == "mean"
  live = live_slices(inner_batches)

  def body(fast, xs):
    inner_batch, live_i = xs
    inner, grads = inner_gradient(loss_fn, fast, inner_batch, options)
    fast = apply_inner_step(fast, lrs, _scale(grads, live_i), options)
    meta = loss_fn(fast, meta_batch) if with_meta else jnp.zeros((), inner.dtype)
    return fast, (inner, meta)

  if options.remat:
    body = jax.checkpoint(body)
  fast, (inner_losses, meta_losses) = jax.lax.scan(
      body, params, (inner_batches, live), unroll=options.unroll)
  if with_meta:
    meta = jnp.sum(live * meta_losses) / _num_live(live)
  else:
    meta = loss_fn(fast, meta_batch)
    meta_losses = meta[None]
  return meta, {"inner_loss": inner_losses, "meta_losses": meta_losses,
                "fast_params": fast}


def live_slices(inner_batches: Batch) -> jax.Array:
  """[k] float 1.0 for each slice holding a sample of positive weight, else 0.0
  (an all-padding slice of `pad_into_slices`: no inner step)."""
  w = inner_batches.weight
  return (jnp.sum(w.reshape(w.shape[0], -1) > 0, axis=1) > 0).astype(w.dtype)


def _num_live(live: jax.Array) -> jax.Array:
  """Σ live_i, at least 1 (a batch without any sample has a meta-loss of 0)."""
  return jnp.maximum(jnp.sum(live), 1.0)


def _scale(tree: Params, c: jax.Array) -> Params:
  return jax.tree_util.tree_map(lambda x: x * c.astype(x.dtype), tree)


def meta_gradients(loss_fn: LossFn, params: Params, lrs: Params,
                   inner_batches: Batch, meta_batch: Batch,
                   options: LookaheadOptions, wrt_lrs: bool = True
                   ) -> tuple[jax.Array, Params, Optional[Params], dict]:
  """Meta-loss and its gradients w.r.t. θ0 and (if `wrt_lrs`) α.

  Returns:
    (meta_loss, ∂L/∂θ0, ∂L/∂α or None, aux).
  """
  if options.first_order and options.first_order_impl == "accumulate":
    return _first_order_accumulated(loss_fn, params, lrs, inner_batches, meta_batch,
                                    options, wrt_lrs)
  if not options.first_order and options.second_order_impl == "hvp":
    return _second_order_by_hvp(loss_fn, params, lrs, inner_batches, meta_batch,
                                options, wrt_lrs)

  def f(p, a):
    return lookahead_loss(loss_fn, p, a, inner_batches, meta_batch, options)

  argnums = (0, 1) if wrt_lrs else 0
  (loss, aux), grads = jax.value_and_grad(f, argnums=argnums, has_aux=True)(params, lrs)
  if wrt_lrs:
    return loss, grads[0], grads[1], aux
  return loss, grads, None, aux


def _first_order_accumulated(loss_fn: LossFn, params: Params, lrs: Params,
                             inner_batches: Batch, meta_batch: Batch,
                             options: LookaheadOptions, wrt_lrs: bool):
  """First-order `meta_gradients` by forward accumulation (module docstring)."""
  tmap = jax.tree_util.tree_map
  mean = options.meta_loss == "mean"
  k = jax.tree_util.tree_leaves(inner_batches)[0].shape[0]
  live = live_slices(inner_batches)
  step_lrs = tmap(jax.nn.relu, lrs) if options.relu_lrs else lrs  # once, not per step
  step_options = dataclasses.replace(options, relu_lrs=False)

  def body(carry, xs):
    fast, grad_sum, g_theta, g_alpha, meta_sum = carry
    index, inner_batch, live_i = xs
    inner, grads = inner_gradient(loss_fn, fast, inner_batch, options)
    grads = _scale(grads, live_i)  # an empty slice takes no step
    new_fast = apply_inner_step(fast, step_lrs, grads, step_options)
    grad_sum = tmap(jnp.add, grad_sum, grads)

    def with_meta(acc, weight):
      g_theta, g_alpha, meta_sum = acc
      meta, g_meta = jax.value_and_grad(loss_fn)(new_fast, meta_batch)
      g_meta = _scale(g_meta, weight)
      g_theta = tmap(jnp.add, g_theta, g_meta)
      if wrt_lrs:
        g_alpha = tmap(lambda ga, gm, s: ga - gm * s, g_alpha, g_meta, grad_sum)
      return g_theta, g_alpha, meta_sum + weight * meta

    acc = (g_theta, g_alpha, meta_sum)
    if mean:
      acc = with_meta(acc, live_i)
    else:  # 'last': only after the final step
      acc = jax.lax.cond(index == k - 1, lambda a: with_meta(a, jnp.ones_like(live_i)),
                         lambda a: a, acc)
    return (new_fast, grad_sum) + acc, inner

  zeros = tmap(jnp.zeros_like, params)
  init = (params, zeros, zeros, zeros if wrt_lrs else None,
          jnp.zeros((), jax.tree_util.tree_leaves(params)[0].dtype))
  (fast, _, g_theta, g_alpha, meta_sum), inner_losses = jax.lax.scan(
      body, init, (jnp.arange(k), inner_batches, live), unroll=options.unroll)
  n = _num_live(live) if mean else 1
  g_theta = tmap(lambda g: g / n, g_theta)
  if wrt_lrs:
    rho = tmap(lambda a: (a > 0).astype(a.dtype), lrs) if options.relu_lrs else None
    g_alpha = tmap(lambda g: g / n, g_alpha)
    if rho is not None:
      g_alpha = tmap(jnp.multiply, g_alpha, rho)
  aux = {"inner_loss": inner_losses, "fast_params": fast}
  return meta_sum / n, g_theta, g_alpha, aux


def _second_order_by_hvp(loss_fn: LossFn, params: Params, lrs: Params,
                         inner_batches: Batch, meta_batch: Batch,
                         options: LookaheadOptions, wrt_lrs: bool):
  """Second-order `meta_gradients` by an explicit reverse pass (module docstring)."""
  tmap = jax.tree_util.tree_map
  mean = options.meta_loss == "mean"
  live = live_slices(inner_batches).astype(jax.tree_util.tree_leaves(params)[0].dtype)
  n = _num_live(live) if mean else 1
  c = options.grad_clamp
  step_lrs = tmap(jax.nn.relu, lrs) if options.relu_lrs else lrs

  def clamp(g):
    return g if c is None else tmap(lambda x: jnp.clip(x, -c, c), g)

  def grad_and_loss(p, batch):
    loss, g = jax.value_and_grad(loss_fn)(p, batch)
    return g, loss

  def forward(fast, xs):
    inner_batch, live_i = xs
    g, hvp, inner = jax.vjp(lambda p: grad_and_loss(p, inner_batch), fast, has_aux=True)
    new_fast = tmap(lambda p, a, x: p - a * (live_i * x), fast, step_lrs, clamp(g))
    return new_fast, (hvp, fast, g, inner)

  fast, (hvps, thetas, grads, inner_losses) = jax.lax.scan(
      forward, params, (inner_batches, live), unroll=options.unroll)

  def meta_grad(theta, weight):
    """weight ∇L_meta(θ) / n: weight = live of the step that produced θ."""
    meta, g = jax.value_and_grad(loss_fn)(theta, meta_batch)
    return weight * meta, tmap(lambda x: x * weight / n, g)

  def backward(carry, xs, with_meta):
    adj, adj_lrs, meta_sum = carry
    hvp, theta, g, live_i, live_before = xs
    clamped, clamp_vjp = jax.vjp(clamp, g)
    v, = clamp_vjp(tmap(lambda a, x: a * (live_i * x), step_lrs, adj))  # m ⊙ a ⊙ θ̄_{i+1}
    if wrt_lrs:
      adj_lrs = tmap(lambda s, t, x: s - live_i * t * x, adj_lrs, adj, clamped)
    hv, = hvp(v)
    adj = tmap(jnp.subtract, adj, hv)
    if with_meta:  # L_meta(θ_i) entered the mean after step i − 1
      meta, g_meta = meta_grad(theta, live_before)
      adj, meta_sum = tmap(jnp.add, adj, g_meta), meta_sum + meta
    return (adj, adj_lrs, meta_sum), None

  meta, adj = meta_grad(fast, live[-1] if mean else jnp.ones((), live.dtype))
  carry = (adj, tmap(jnp.zeros_like, params) if wrt_lrs else None, meta)
  live_before = jnp.concatenate([jnp.ones_like(live[:1]), live[:-1]])
  later = tmap(lambda a: a[1:], (hvps, thetas, grads, live, live_before))
  carry, _ = jax.lax.scan(lambda cr, xs: backward(cr, xs, mean), carry, later,
                          reverse=True, unroll=options.unroll)
  first = tmap(lambda a: a[0], (hvps, thetas, grads, live, live_before))
  (g_theta, g_alpha, meta_sum), _ = backward(carry, first, False)
  if wrt_lrs and options.relu_lrs:
    g_alpha = tmap(lambda g, a: g * (a > 0).astype(a.dtype), g_alpha, lrs)
  aux = {"inner_loss": inner_losses, "fast_params": fast}
  return meta_sum / n, g_theta, g_alpha, aux


def check_inner_steps(k: int, b: int) -> None:
  """Raises ValueError unless k inner steps split a batch of b samples evenly
  (`split_into_slices`; `pad_into_slices` takes any k >= 1)."""
  if k < 1 or k > b or b % k:
    raise ValueError(f"inner_steps={k} must divide the batch size {b} (and lie in "
                     f"[1, {b}]); set inner_steps to a divisor of {b} or change "
                     "batch_size.")


def split_into_slices(batch: Batch, k: int) -> Batch:
  """Reshapes a [B, ...] batch into k consecutive slices [k, B/k, ...]."""
  b = batch.y.shape[0]
  check_inner_steps(k, b)
  return jax.tree_util.tree_map(lambda a: a.reshape((k, b // k, *a.shape[1:])), batch)


def slice_sizes(b: int, k: int) -> list[int]:
  """Real samples per slice of `pad_into_slices`: `torch.split` of b samples into
  chunks of s = ⌈b/k⌉, then empty slices up to k (b = 10, k = 3: [4, 4, 2];
  b = 2, k = 3: [1, 1, 0])."""
  if k < 1 or b < 1:
    raise ValueError(f"inner_steps={k} and the batch size {b} must be >= 1.")
  s = -(-b // k)
  return [max(0, min(s, b - i * s)) for i in range(k)]


def pad_into_slices(batch: Batch, k: int) -> Batch:
  """Splits a [B, ...] batch into k consecutive slices of s = ⌈B/k⌉ rows,
  [k, s, ...], as `torch.split(batch, s)` (sizes `slice_sizes`), padding the
  last rows with copies of row 0 of weight 0 (valid labels and tasks, no
  influence on a weighted loss). For k dividing B it equals `split_into_slices`.
  Any k >= 1; slices past the data are all padding, and `meta_gradients` skips
  them (module docstring)."""
  b = batch.y.shape[0]
  sizes = slice_sizes(b, k)
  s = sizes[0]
  pad = k * s - b
  if pad == 0:
    return split_into_slices(batch, k)
  rows = np.concatenate([np.arange(b), np.zeros(pad, np.int64)])
  keep = np.concatenate([np.ones(b), np.zeros(pad)])
  padded = jax.tree_util.tree_map(lambda a: a[rows], batch)
  padded = padded._replace(weight=padded.weight * jnp.asarray(keep, padded.weight.dtype))
  return jax.tree_util.tree_map(lambda a: a.reshape((k, s, *a.shape[1:])), padded)
