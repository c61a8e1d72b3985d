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
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal, Optional, Union

import jax
import jax.numpy as jnp

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
  """
  first_order: bool = True
  grad_clamp: Optional[float] = None
  relu_lrs: bool = False
  meta_loss: Literal["mean", "last"] = "mean"
  unroll: Union[int, bool] = True
  first_order_impl: Literal["accumulate", "unroll"] = "accumulate"
  second_order_impl: Literal["hvp", "unroll"] = "hvp"

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
    lrs: α, same structure as params.
    inner_batches: Batch whose leaves have a leading axis k: [k, B/k, ...].
    meta_batch: Batch [M, ...] scored after each inner step.
    options: see `LookaheadOptions`.

  Returns:
    (meta-loss, aux) with aux = {'inner_loss': [k], 'meta_losses': [k] or [1],
    'fast_params': θ_k}.
  """
  with_meta = options.meta_loss == "mean"

  def body(fast, inner_batch):
    fast, inner = inner_step(loss_fn, fast, lrs, inner_batch, options)
    meta = loss_fn(fast, meta_batch) if with_meta else jnp.zeros((), inner.dtype)
    return fast, (inner, meta)

  fast, (inner_losses, meta_losses) = jax.lax.scan(
      body, params, inner_batches, unroll=options.unroll)
  if with_meta:
    meta = jnp.mean(meta_losses)
  else:
    meta = loss_fn(fast, meta_batch)
    meta_losses = meta[None]
  return meta, {"inner_loss": inner_losses, "meta_losses": meta_losses,
                "fast_params": fast}


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
  step_lrs = tmap(jax.nn.relu, lrs) if options.relu_lrs else lrs  # once, not per step
  step_options = dataclasses.replace(options, relu_lrs=False)

  def body(carry, xs):
    fast, grad_sum, g_theta, g_alpha, meta_sum = carry
    index, inner_batch = xs
    inner, grads = inner_gradient(loss_fn, fast, inner_batch, options)
    new_fast = apply_inner_step(fast, step_lrs, grads, step_options)
    grad_sum = tmap(jnp.add, grad_sum, grads)

    def with_meta(acc):
      g_theta, g_alpha, meta_sum = acc
      meta, g_meta = jax.value_and_grad(loss_fn)(new_fast, meta_batch)
      g_theta = tmap(jnp.add, g_theta, g_meta)
      if wrt_lrs:
        g_alpha = tmap(lambda ga, gm, s: ga - gm * s, g_alpha, g_meta, grad_sum)
      return g_theta, g_alpha, meta_sum + meta

    acc = (g_theta, g_alpha, meta_sum)
    if mean:
      acc = with_meta(acc)
    else:  # 'last': only after the final step
      acc = jax.lax.cond(index == k - 1, with_meta, lambda a: a, acc)
    return (new_fast, grad_sum) + acc, inner

  zeros = tmap(jnp.zeros_like, params)
  init = (params, zeros, zeros, zeros if wrt_lrs else None,
          jnp.zeros((), jax.tree_util.tree_leaves(params)[0].dtype))
  (fast, _, g_theta, g_alpha, meta_sum), inner_losses = jax.lax.scan(
      body, init, (jnp.arange(k), inner_batches), unroll=options.unroll)
  n = k if mean else 1
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
  k = jax.tree_util.tree_leaves(inner_batches)[0].shape[0]
  n = k if mean else 1
  c = options.grad_clamp
  step_lrs = tmap(jax.nn.relu, lrs) if options.relu_lrs else lrs

  def clamp(g):
    return g if c is None else tmap(lambda x: jnp.clip(x, -c, c), g)

  def grad_and_loss(p, batch):
    loss, g = jax.value_and_grad(loss_fn)(p, batch)
    return g, loss

  def forward(fast, inner_batch):
    g, hvp, inner = jax.vjp(lambda p: grad_and_loss(p, inner_batch), fast, has_aux=True)
    new_fast = tmap(lambda p, a, x: p - a * x, fast, step_lrs, clamp(g))
    return new_fast, (hvp, fast, g, inner)

  fast, (hvps, thetas, grads, inner_losses) = jax.lax.scan(
      forward, params, inner_batches, unroll=options.unroll)

  def meta_grad(theta):
    meta, g = jax.value_and_grad(loss_fn)(theta, meta_batch)
    return meta, tmap(lambda x: x / n, g)

  def backward(carry, xs, with_meta):
    adj, adj_lrs, meta_sum = carry
    hvp, theta, g = xs
    clamped, clamp_vjp = jax.vjp(clamp, g)
    v, = clamp_vjp(tmap(jnp.multiply, step_lrs, adj))  # m ⊙ a ⊙ θ̄_{i+1}
    if wrt_lrs:
      adj_lrs = tmap(lambda s, t, x: s - t * x, adj_lrs, adj, clamped)
    hv, = hvp(v)
    adj = tmap(jnp.subtract, adj, hv)
    if with_meta:
      meta, g_meta = meta_grad(theta)
      adj, meta_sum = tmap(jnp.add, adj, g_meta), meta_sum + meta
    return (adj, adj_lrs, meta_sum), None

  meta, adj = meta_grad(fast)
  carry = (adj, tmap(jnp.zeros_like, params) if wrt_lrs else None, meta)
  later = tmap(lambda a: a[1:], (hvps, thetas, grads))
  carry, _ = jax.lax.scan(lambda cr, xs: backward(cr, xs, mean), carry, later,
                          reverse=True, unroll=options.unroll)
  first = tmap(lambda a: a[0], (hvps, thetas, grads))
  (g_theta, g_alpha, meta_sum), _ = backward(carry, first, False)
  if wrt_lrs and options.relu_lrs:
    g_alpha = tmap(lambda g, a: g * (a > 0).astype(a.dtype), g_alpha, lrs)
  aux = {"inner_loss": inner_losses, "fast_params": fast}
  return meta_sum / n, g_theta, g_alpha, aux


def check_inner_steps(k: int, b: int) -> None:
  """Raises ValueError unless k inner steps split a batch of b samples evenly."""
  if k < 1 or k > b or b % k:
    raise ValueError(f"inner_steps={k} must divide the batch size {b} (and lie in "
                     f"[1, {b}]); set inner_steps to a divisor of {b} or change "
                     "batch_size.")


def split_into_slices(batch: Batch, k: int) -> Batch:
  """Reshapes a [B, ...] batch into k consecutive slices [k, B/k, ...]."""
  b = batch.y.shape[0]
  check_inner_steps(k, b)
  return jax.tree_util.tree_map(lambda a: a.reshape((k, b // k, *a.shape[1:])), batch)
