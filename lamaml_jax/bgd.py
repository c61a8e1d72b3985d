"""Bayesian Gradient Descent (BGD; Zeno, Golan, Hoffer & Soudry 2018, "Task
Agnostic Continual Learning Using Online Variational Bayes", arXiv:1803.10123)
as pure functions on pytrees.

Every scalar weight θ_i has a Gaussian posterior N(μ_i, σ_i²) (mean-field). One
BGD step on a batch with loss L (un-normalised: a sum over samples):
  1. draw N Monte Carlo samples θ⁽ⁿ⁾ = μ + σ ⊙ ε⁽ⁿ⁾, ε⁽ⁿ⁾ ~ N(0, I)   (`noise`, `sample`);
  2. estimate, per element, with g⁽ⁿ⁾ = ∂L/∂θ at θ⁽ⁿ⁾            (`expectations`)
       E_g  = (1/N) Σ_n g⁽ⁿ⁾,      E_gε = (1/N) Σ_n g⁽ⁿ⁾ ⊙ ε⁽ⁿ⁾;
  3. apply the closed-form update of the paper's §3 (Algorithm 1), every element
     from the old σ                                               (`update`):
       μ ← μ − η σ² E_g,
       σ ← σ √(1 + (σ E_gε / 2)²) − σ² E_gε / 2.
The σ update keeps σ > 0 (√(1 + u²) > u for u = σ E_gε / 2); for u > 0 it is
computed as σ / (√(1 + u²) + u), the same number without the cancellation that
would round it to 0 (or below) for large u. Nothing else bounds σ (the official
`bgd_optimizer.py` has no clamp either). With ε = 0 (E_gε = 0) σ is unchanged and
the mean step is SGD with step size η σ².
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lamaml_jax.types import Params, PRNGKey

tmap = jax.tree_util.tree_map


class BGDState(NamedTuple):
  """mean: μ and std: σ, pytrees of the same structure (leaves may broadcast,
  e.g. [] for a constant)."""
  mean: Params
  std: Params


def init(params: Params, std_init) -> BGDState:
  """μ = the initial weights, σ = std_init everywhere ([] or a traced [] array)."""
  return BGDState(mean=params,
                  std=tmap(lambda p: jnp.full_like(p, std_init), params))


def noise(key: PRNGKey, like: Params, num: int) -> Params:
  """ε ~ N(0, I): a tree like `like` whose leaves have a leading axis of `num`
  samples, [num, *leaf.shape]. Drawn as one [num, Σ sizes] array and cut into
  the leaves: one random-bits kernel, not one a leaf (XLA:CPU compiles each
  separately, seconds apiece)."""
  leaves, treedef = jax.tree_util.tree_flatten(like)
  sizes = [int(np.prod(jnp.shape(x), dtype=np.int64)) for x in leaves]
  dtype = jnp.result_type(*leaves) if leaves else jnp.float32
  flat = jax.random.normal(key, (num, sum(sizes)), dtype)
  parts = jnp.split(flat, np.cumsum(sizes)[:-1], axis=1)
  return jax.tree_util.tree_unflatten(treedef, [
      p.reshape((num, *jnp.shape(x))).astype(jnp.result_type(x))
      for p, x in zip(parts, leaves)])


def sample(state: BGDState, eps: Params) -> Params:
  """θ = μ + σ ⊙ ε (reparameterisation); eps like `state.mean`."""
  return tmap(lambda m, s, e: m + s * e, state.mean, state.std, eps)


def expectations(grads: Params, eps: Params) -> tuple[Params, Params]:
  """Monte Carlo estimates (E_g, E_gε) from N samples along axis 0.

  Args:
    grads: g⁽ⁿ⁾, leaves [N, ...].
    eps: ε⁽ⁿ⁾ that produced them, same shapes.

  Returns:
    (mean_n g⁽ⁿ⁾, mean_n g⁽ⁿ⁾ ⊙ ε⁽ⁿ⁾), leaves [...].
  """
  e_grad = tmap(_mean_over_samples, grads)
  e_grad_eps = tmap(lambda g, e: _mean_over_samples(g * e), grads, eps)
  return e_grad, e_grad_eps


def _mean_over_samples(x: jax.Array) -> jax.Array:
  """[N, ...] -> [...]: the mean over axis 0 as a sum of its N slices.

  The sums of `jnp.mean(x, axis=0)`, but elementwise: XLA:CPU hands a
  reduction over a short major axis to a library kernel that took 9-15 ms for
  the [2, 2560, 320] CIFAR dense kernel with the BGD step fused into it, where
  the elementwise form is memory-bound (BUILD.md). XLA fuses the two forms
  differently, so results differ from `jnp.mean`'s by float rounding (a 3-task
  mnist5k_rotations run: RA 0.8153 against 0.8140).
  """
  total = x[0]
  for i in range(1, x.shape[0]):
    total = total + x[i]
  return total / x.shape[0]


def update(state: BGDState, e_grad: Params, e_grad_eps: Params, mean_eta
           ) -> BGDState:
  """The closed-form BGD step (module docstring), per element, old σ in both:
  μ ← μ − η σ² E_g;  σ ← σ √(1 + (σ E_gε/2)²) − σ² E_gε/2."""
  def new_mean(m, s, g):
    return m - mean_eta * s * s * g

  def new_std(s, ge):
    u = s * ge / 2
    root = jnp.sqrt(1 + u * u)
    # σ(√(1+u²) − u) = σ / (√(1+u²) + u): the second form for u > 0.
    return jnp.where(u > 0, s / (root + jnp.abs(u)), s * (root - u))

  return BGDState(mean=tmap(new_mean, state.mean, state.std, e_grad),
                  std=tmap(new_std, state.std, e_grad_eps))
