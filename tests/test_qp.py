"""The box-QP solver against GEM's constraints and against quadprog (the official
solver), degenerate problems included."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import quadprog

from lamaml_jax import qp

SOLVE = jax.jit(qp.solve_box_qp, static_argnames=("iterations",))
K_MAX = 20  # problems are padded to K_MAX rows, as GEM pads its past tasks


def solve_padded(G, g, margin, epsilon, dtype):
  """Solves the dual of G [k, dim], g with G padded by zero rows to K_MAX (one
  compilation for all k); checks that the padded rows stay exactly at the margin.

  Returns (v [k] float64, residual)."""
  k = G.shape[0]
  Gp = np.concatenate([G, np.zeros((K_MAX - k, G.shape[1]))])
  P = Gp @ Gp.T + epsilon * np.eye(K_MAX)
  sol = SOLVE(jnp.asarray(P, dtype), jnp.asarray(Gp @ g, dtype),
              jnp.full(K_MAX, margin, dtype))
  assert sol.v.dtype == dtype
  v = np.asarray(sol.v, np.float64)
  np.testing.assert_array_equal(v[k:], np.asarray(margin, dtype))
  return v[:k], float(sol.residual)


def gradients(rng, k, dim=40, kind="random"):
  """G [k, dim] (rows: past tasks' gradients) and g [dim] in conflict with them."""
  G = rng.normal(size=(k, dim))
  if kind == "correlated":  # a shared direction, as real tasks' gradients have
    G = 2.0 * rng.normal(size=(1, dim)) + 0.5 * G
  elif kind == "duplicate" and k > 1:
    G[k // 2:] = G[:k - k // 2]
  elif kind == "rank2":
    G = rng.normal(size=(k, 2)) @ rng.normal(size=(2, dim))
  elif kind == "zero_row":
    G[0] = 0.0
  g = rng.normal(size=dim) - 0.5 * G.mean(axis=0)
  return G, g


def quadprog_dual(G, g, margin, epsilon):
  """The official call: quadprog minimises ½xᵀPx − aᵀx s.t. Cᵀx ≥ b, so a = −Gg
  gives ½vᵀPv + (Gg)ᵀv s.t. v ≥ margin."""
  k = G.shape[0]
  P = G @ G.T
  P = 0.5 * (P + P.T) + epsilon * np.eye(k)
  return quadprog.solve_qp(P, -(G @ g), np.eye(k), margin * np.ones(k))[0]


@pytest.mark.parametrize("kind", ["random", "correlated"])
def test_projection_satisfies_every_constraint_float32(kind):
  """ε = 0, margin 0: g̃ = Gᵀv + g has ⟨g̃, g_k⟩ = (Pv + q)_k ≥ 0 at the optimum.
  In float32 the products carry rounding of order eps·‖g_k‖·(‖g‖ + ‖Gᵀv‖), so
  the bound is −1e-6 relative to that scale (absolute −1e-6 would test rounding)."""
  rng = np.random.default_rng(0)
  violated_before = 0
  for k in (1, 2, 3, 5, 8, 13, 20):
    G, g = gradients(rng, k, kind=kind)
    violated_before += int(np.sum(G @ g < 0))
    v, _ = solve_padded(G, g, 0.0, 0.0, jnp.float32)
    assert np.all(v >= 0)
    g_tilde = G.T @ v + g
    scale = np.linalg.norm(G, axis=1) * (np.linalg.norm(g) + np.linalg.norm(G.T @ v))
    assert np.all(G @ g_tilde >= -1e-6 * scale), (k, G @ g_tilde / scale)
  assert violated_before > 10  # the problems are not trivially feasible


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_matches_quadprog_in_float64(margin):
  """ε = 1e-3: v equals quadprog's solution, on random and degenerate problems."""
  rng = np.random.default_rng(1)
  at_bound = interior = 0
  with jax.enable_x64(True):
    for kind in ("random", "correlated", "duplicate", "rank2", "zero_row"):
      for k in (1, 2, 4, 7, 12, 20):
        G, g = gradients(rng, k, kind=kind)
        G, g = G / 4, g / 4  # the scale of clipped gradients
        expected = quadprog_dual(G, g, margin, 1e-3)
        v, residual = solve_padded(G, g, margin, 1e-3, jnp.float64)
        np.testing.assert_allclose(v, expected, atol=1e-5, err_msg=f"{kind} K={k}")
        assert residual < 1e-8
        at_bound += int(np.sum(expected <= margin + 1e-9))
        interior += int(np.sum(expected > margin + 1e-3))
  assert at_bound > 10 and interior > 10  # both kinds of coordinates are tested


def test_float32_projected_gradient_matches_quadprog():
  """In float32 the projected gradient g̃ (what GEM uses) still matches."""
  rng = np.random.default_rng(2)
  for kind in ("random", "correlated", "duplicate", "zero_row"):
    G, g = gradients(rng, 20, kind=kind)
    G, g = G / 4, g / 4
    expected = G.T @ quadprog_dual(G, g, 0.5, 1e-3) + g
    got = G.T @ solve_padded(G, g, 0.5, 1e-3, jnp.float32)[0] + g
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(),
                               err_msg=kind)


def test_zero_rows_stay_exactly_at_the_bound():
  """ε = 0 and masked rows: P and q are exactly 0 there (P_FF singular)."""
  rng = np.random.default_rng(3)
  G, g = gradients(rng, K_MAX)
  G[[1, 4]] = 0.0
  lower = np.full(K_MAX, 0.5)
  lower[[1, 4]] = [0.25, 1.0]
  sol = SOLVE(jnp.asarray(G @ G.T, jnp.float32), jnp.asarray(G @ g, jnp.float32),
              jnp.asarray(lower, jnp.float32))
  assert np.all(np.isfinite(np.asarray(sol.v)))
  assert float(sol.v[1]) == 0.25 and float(sol.v[4]) == 1.0
  rows = [i for i in range(K_MAX) if i not in (1, 4)]
  expected = quadprog_dual(G[rows], g, 0.5, 0.0)
  np.testing.assert_allclose(np.asarray(sol.v)[rows], expected, rtol=1e-4, atol=1e-4)


def test_residual_measures_convergence():
  """Small at the solution; large when the iterations are too few."""
  rng = np.random.default_rng(4)
  G, g = gradients(rng, 20, kind="correlated")
  P = jnp.asarray(G @ G.T + 1e-3 * np.eye(20), jnp.float32)
  q, lower = jnp.asarray(G @ g, jnp.float32), jnp.zeros(20, jnp.float32)
  scale = float(jnp.max(jnp.abs(q)))
  converged = SOLVE(P, q, lower)
  early = SOLVE(P, q, lower, iterations=1)
  assert float(converged.residual) < 1e-5 * scale
  assert float(early.residual) > 1e-2 * scale
  # The residual is ‖v − max(l, v − ∇f)‖_∞, recomputed here from its definition.
  v = np.asarray(early.v, np.float64)
  grad = np.asarray(P, np.float64) @ v + np.asarray(q, np.float64)
  np.testing.assert_allclose(float(early.residual),
                             np.abs(v - np.maximum(0.0, v - grad)).max(), rtol=1e-4)


def test_compiles_once_and_runs_under_vmap():
  """Fixed iterations: one trace per shape; a sweep can vmap the solver."""
  chex.clear_trace_counter()
  solve = jax.jit(chex.assert_max_traces(qp.solve_box_qp, n=1))
  rng = np.random.default_rng(5)
  Ps, qs = [], []
  for _ in range(3):
    G, g = gradients(rng, 5)
    Ps.append(G @ G.T + 1e-3 * np.eye(5))
    qs.append(G @ g)
    solve(jnp.asarray(Ps[-1], jnp.float32), jnp.asarray(qs[-1], jnp.float32),
          jnp.zeros(5, jnp.float32))
  batched = jax.vmap(qp.solve_box_qp)(jnp.asarray(np.stack(Ps), jnp.float32),
                                      jnp.asarray(np.stack(qs), jnp.float32),
                                      jnp.zeros((3, 5), jnp.float32))
  for i in range(3):
    with jax.enable_x64(True):
      P64 = Ps[i]
      expected = quadprog.solve_qp(P64, -qs[i], np.eye(5), np.zeros(5))[0]
    np.testing.assert_allclose(np.asarray(batched.v[i]), expected, atol=1e-4)


def test_rejects_nonpositive_iterations():
  with pytest.raises(ValueError, match="iterations"):
    qp.solve_box_qp(jnp.eye(2), jnp.zeros(2), jnp.zeros(2), iterations=0)
