"""First-order look-ahead for an MLP, with the first layer's fast weights implicit.

Same numbers as `lookahead.meta_gradients` (first order, meta_loss='mean', no inner
clamp), computed with fewer and larger matmuls. It is what makes the MNIST learners
fast on CPU, where the generic unroll spends its time in many small matmuls of the
784-wide first layer inside a sequential loop.

Notation of `lookahead`, plus: first layer z = x W + b with W [D, H]; inner samples
u = 0..B-1 (slice l(u) = u // s of k slices of s); a = relu(α_W) (or α_W) its
learning rates; δ_u = ∂ℓ_l/∂z at sample u (ℓ_l the mean loss of slice l).
The inner gradient of W is G_l = Σ_{u∈l} x_u δ_uᵀ, so on any evaluation row e

  x_e W_i = x_e W_0 − Σ_{u: l(u)<i} P_{u,e} ⊙ δ_u,    P_{u,e} = (x_u ⊙ x_e) a,   (1)

and P for all (u, e) is one matmul [B·E, D] @ [D, H] done before the loop; the
loop then only works in the H-wide hidden space. With Δ_i = ∂L_meta(θ_i)/∂z on the
M meta rows (i = 1..k) and R_l = Σ_{i>l} Δ_i, the first-order gradients of W are

  ∂L/∂W_0 = (1/k) X_metaᵀ Σ_i Δ_i,
  ∂L/∂α_W = −(ρ/k) Σ_l G_l ⊙ (X_metaᵀ R_l) = −(ρ/k) XPᵀ DR,                     (2)

with XP[(u,n), :] = x_u ⊙ x_n and DR[(u,n), :] = δ_u ⊙ R_{l(u)}[n]: again one
matmul after the loop. The other layers ("tail") are stepped explicitly as in
`lookahead._first_order_accumulated`; their backward pass is written out so that
the meta rows and the next inner slice share one forward pass at θ_{i}.

When the inner samples are themselves evaluation rows (the meta batch holds the
stream), x_u ⊙ x_v = x_v ⊙ x_u makes P and XP symmetric over those pairs: both
matmuls run over the B(E−B) + B(B+1)/2 distinct pairs only (155 instead of 200
rows for MNIST's B = 10, E = 20), and DR sums the two pairs each row stands for.
FLOPs are then below the generic path's when s = 1 (MNIST) and grow with s, so
the learner uses this path only for single-sample slices (`applicable`).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lamaml_jax import heads
from lamaml_jax import lookahead
from lamaml_jax import networks
from lamaml_jax.types import Batch, Params

FIRST = "Dense_0"


def applicable(network: nn.Module, options: lookahead.LookaheadOptions,
               slice_size: int) -> bool:
  """Whether `meta_gradients` computes what `lookahead.meta_gradients` would, and
  pays off: an MLP, first order, mean meta-loss, no inner clamp, s = 1."""
  return (isinstance(network, networks.MLP) and options.first_order
          and options.meta_loss == "mean" and options.grad_clamp is None
          and slice_size == 1)


def _tail_names(params: Params) -> list[str]:
  names = sorted(params, key=lambda n: int(n.split("_")[-1]))
  if names[0] != FIRST or any(n != f"Dense_{i}" for i, n in enumerate(names)):
    raise ValueError(f"Expected MLP parameters Dense_0..Dense_L, got {sorted(params)}.")
  return names[1:]


def split(params: Params) -> tuple[jax.Array, Params]:
  """(W [D, H], tail): the first kernel, and everything else (incl. its bias)."""
  tail = dict(params)
  tail[FIRST] = {"bias": params[FIRST]["bias"]}
  return params[FIRST]["kernel"], tail


def merge(kernel: jax.Array, tail: Params) -> Params:
  params = dict(tail)
  params[FIRST] = {"kernel": kernel, "bias": tail[FIRST]["bias"]}
  return params


def distinct_pairs(b: int, e: int, offset: int, m: int):
  """Distinct products x_u ⊙ x_row among inner samples u < b and rows < e, where
  inner sample v is also row offset + v (static numpy, at trace time).

  Returns:
    (pair_u [Q], pair_row [Q]): the Q distinct pairs;
    index [b, e]: the pair each (u, row) equals;
    sources [Q, 2]: flat indices u * m + row (row < m) of the (u, row) that equal
      each pair, b * m where there are fewer than two.
  """
  index = np.empty((b, e), np.int32)
  pairs = []
  for u in range(b):
    for row in range(e):
      v = row - offset
      if 0 <= v < u:  # (u, row of v) equals (v, row of u), counted already
        index[u, row] = index[v, offset + u]
      else:
        index[u, row] = len(pairs)
        pairs.append((u, row))
  sources = np.full((len(pairs), 2), b * m, np.int32)
  filled = np.zeros(len(pairs), np.int32)
  for u in range(b):
    for row in range(m):
      q = index[u, row]
      sources[q, filled[q]] = u * m + row
      filled[q] += 1
  pair_u, pair_row = (np.array(c, np.int32) for c in zip(*pairs))
  return pair_u, pair_row, index, sources


def tail_value_and_grads(tail: Params, z: jax.Array, y: jax.Array, task: jax.Array,
                         weight: jax.Array, groups: tuple[tuple[int, int], ...],
                         classes_per_task: Optional[int]):
  """Loss and gradients of each row group, from one forward pass.

  Args:
    tail: `split`'s tail parameters.
    z: [N, H] first-layer pre-activations without bias, x W.
    y, task, weight: [N] labels, task ids and sample weights.
    groups: static (start, stop) row ranges; each group's loss is its weighted mean
      cross-entropy (`heads.cross_entropy`).
    classes_per_task: task-incremental head size or None.

  Returns:
    (losses [G], per-group tail gradients (list of G pytrees), ∂ loss_g/∂z [N, H]
    (each row w.r.t. its own group's loss)).
  """
  names = _tail_names(tail)
  h = jax.nn.relu(z + tail[FIRST]["bias"])
  inputs = []
  for i, name in enumerate(names):
    inputs.append(h)
    out = h @ tail[name]["kernel"] + tail[name]["bias"]
    h = jax.nn.relu(out) if i < len(names) - 1 else out
  logp = heads.log_softmax(h, task, classes_per_task)
  per_sample = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
  w = weight.astype(z.dtype)
  norm = jnp.concatenate([jnp.broadcast_to(jnp.maximum(jnp.sum(w[a:b]), 1e-12), (b - a,))
                          for a, b in groups])
  w = w / norm
  # ∂(Σ_n w_n CE_n)/∂logits; masked logits have softmax 0 and no label.
  delta = (jnp.exp(logp) - jax.nn.one_hot(y, logp.shape[-1], dtype=z.dtype)) * w[:, None]
  grads = [dict() for _ in groups]
  for i in reversed(range(len(names))):
    name, h_in = names[i], inputs[i]
    for g, (a, b) in enumerate(groups):
      grads[g][name] = {"kernel": h_in[a:b].T @ delta[a:b],
                        "bias": jnp.sum(delta[a:b], axis=0)}
    delta = (delta @ tail[name]["kernel"].T) * (h_in > 0)
  for g, (a, b) in enumerate(groups):
    grads[g][FIRST] = {"bias": jnp.sum(delta[a:b], axis=0)}
  losses = jnp.stack([jnp.sum((w * per_sample)[a:b]) for a, b in groups])
  return losses, grads, delta


def meta_gradients(params: Params, lrs: Params, inner_batches: Batch,
                   meta_batch: Batch, options: lookahead.LookaheadOptions,
                   classes_per_task: Optional[int] = None, wrt_lrs: bool = True,
                   stream_offset: Optional[int] = None):
  """`lookahead.meta_gradients` for an `networks.MLP` (module docstring).

  Args:
    params, lrs: MLP parameters θ0 and learning rates α (Dense_0..Dense_L).
    inner_batches: [k, s, ...] inner slices; meta_batch: [M, ...].
    options: first_order, meta_loss='mean', grad_clamp=None required.
    classes_per_task: as in `heads`.
    wrt_lrs: also return ∂L/∂α.
    stream_offset: if the meta batch holds the inner samples, in order, as rows
      stream_offset..stream_offset+B-1 (as the learners build it), those rows are
      reused; otherwise the inner samples are evaluated as extra rows.

  Returns:
    (meta_loss, ∂L/∂θ0, ∂L/∂α or None, {'inner_loss': [k]}).
  """
  if not (options.first_order and options.meta_loss == "mean"
          and options.grad_clamp is None):
    raise ValueError("mlp_lookahead needs first_order=True, meta_loss='mean' and "
                     f"grad_clamp=None, got {options}; use lookahead.meta_gradients.")
  tmap = jax.tree_util.tree_map
  k, s = inner_batches.y.shape[:2]
  b, m = k * s, meta_batch.y.shape[0]
  flat = lambda a: a.reshape((a.shape[0], -1))
  x_meta = flat(meta_batch.x)
  inner = tmap(lambda a: a.reshape((b, *a.shape[2:])), inner_batches)
  x_inner = flat(inner.x)
  if stream_offset is None:
    rows, stream_offset = Batch(*(jnp.concatenate([p, q]) for p, q in
                                  zip(meta_batch, inner))), m
  else:
    rows = meta_batch
  x_rows = flat(rows.x)

  step_lrs = tmap(jax.nn.relu, lrs) if options.relu_lrs else lrs
  w0, tail = split(params)
  a_w, a_tail = split(step_lrs)
  h = w0.shape[1]
  n_rows = x_rows.shape[0]
  pair_u, pair_row, pair_index, pair_sources = distinct_pairs(b, n_rows, stream_offset, m)
  xp = x_inner[pair_u] * x_rows[pair_row]                            # [Q, D]
  p = (xp @ a_w)[pair_index].reshape(k, s, n_rows, h)               # (1)
  z0 = x_rows @ w0                                                   # [E, H]
  meta_rows = (0, m)
  slice_rows = lambda j: stream_offset + j * s                       # first row of slice j

  def evaluate(fast, z, j):
    """Meta rows and inner slice j at the same weights."""
    lo = slice_rows(j)
    zs = jax.lax.dynamic_slice_in_dim(z, lo, s)
    sl = lambda a: jax.lax.dynamic_slice_in_dim(a, lo, s)
    zc = jnp.concatenate([z[:m], zs])
    y = jnp.concatenate([rows.y[:m], sl(rows.y)])
    task = jnp.concatenate([rows.task[:m], sl(rows.task)])
    weight = jnp.concatenate([rows.weight[:m], sl(rows.weight)])
    return tail_value_and_grads(fast, zc, y, task, weight, (meta_rows, (m, m + s)),
                                classes_per_task)

  first = tail_value_and_grads(
      tail, jax.lax.dynamic_slice_in_dim(z0, stream_offset, s),
      *(jax.lax.dynamic_slice_in_dim(a, stream_offset, s)
        for a in (rows.y, rows.task, rows.weight)), ((0, s),), classes_per_task)
  zeros = tmap(jnp.zeros_like, tail)

  def body(carry, j):
    fast, z, grad_sum, g_theta, g_alpha, meta_sum, inner_loss, g_in, dz_in = carry
    fast = tmap(lambda q, a, g: q - a * g, fast, a_tail, g_in)
    grad_sum = tmap(jnp.add, grad_sum, g_in)
    z = z - jnp.einsum("uh,ueh->eh", dz_in, p[j])                    # (1)
    losses, (g_meta, g_next), delta = evaluate(fast, z, jnp.minimum(j + 1, k - 1))
    g_theta = tmap(jnp.add, g_theta, g_meta)
    if wrt_lrs:
      g_alpha = tmap(lambda ga, gm, sm: ga - gm * sm, g_alpha, g_meta, grad_sum)
    carry = (fast, z, grad_sum, g_theta, g_alpha, meta_sum + losses[0], losses[1],
             g_next, delta[m:])
    return carry, (delta[:m], dz_in, inner_loss)

  init = (tail, z0, zeros, zeros, zeros if wrt_lrs else None,
          jnp.zeros((), z0.dtype), first[0][0], first[1][0], first[2])
  carry, (deltas, dz, inner_losses) = jax.lax.scan(
      body, init, jnp.arange(k), unroll=options.unroll)
  _, _, _, g_theta, g_alpha, meta_sum, *_ = carry
  # The 1/k of the mean (and the sign of ∂L/∂α) go on the small factors, not on
  # the [D, H] products: one pass less over the largest arrays.
  g_theta = tmap(lambda g: g / k, g_theta)
  g_theta = merge(x_meta.T @ (jnp.sum(deltas, axis=0) / k), g_theta)  # (2)
  if wrt_lrs:
    r = jnp.cumsum(deltas[::-1], axis=0)[::-1] * (-1.0 / k)          # −R_l/k [k, M, H]
    dr = dz[:, :, None, :] * r[:, None, :, :]                         # [k, s, M, H]
    dr = jnp.concatenate([dr.reshape(b * m, h), jnp.zeros((1, h), dr.dtype)])
    dr = dr[pair_sources[:, 0]] + dr[pair_sources[:, 1]]              # [Q, H]
    g_alpha = merge(xp.T @ dr, tmap(lambda g: g / k, g_alpha))        # (2)
    if options.relu_lrs:
      g_alpha = tmap(lambda g, a: g * (a > 0).astype(g.dtype), g_alpha, lrs)
  return meta_sum / k, g_theta, g_alpha, {"inner_loss": inner_losses}
