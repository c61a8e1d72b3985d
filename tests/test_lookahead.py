"""The look-ahead core against independent derivations (Appendix A and B)."""
import functools

import chex
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamaml_jax import heads
from lamaml_jax import lookahead
from lamaml_jax.types import Batch


def tanh_mlp_loss(params, batch):
  """A smooth two-layer net with a weighted softmax cross-entropy."""
  h = jnp.tanh(batch.x @ params["w1"] + params["b1"])
  logits = h @ params["w2"] + params["b2"]
  ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, batch.y[:, None], -1)[:, 0]
  return jnp.sum(batch.weight * ce) / jnp.sum(batch.weight)


def make_problem(key, k, slice_size=2, meta_size=6, dtype=jnp.float32):
  ks = jax.random.split(key, 8)
  params = {
      "w1": jax.random.normal(ks[0], (4, 5), dtype),
      "b1": 0.1 * jax.random.normal(ks[1], (5,), dtype),
      "w2": jax.random.normal(ks[2], (5, 3), dtype),
      "b2": 0.1 * jax.random.normal(ks[3], (3,), dtype),
  }
  lrs = jax.tree_util.tree_map(
      lambda p, kk: 0.05 + 0.1 * jax.random.uniform(kk, p.shape, dtype),
      params, dict(zip(params, jax.random.split(ks[4], 4))))

  def batch(kk, n, lead=()):
    kx, ky = jax.random.split(kk)
    return Batch(x=jax.random.normal(kx, (*lead, n, 4), dtype),
                 y=jax.random.randint(ky, (*lead, n), 0, 3),
                 task=jnp.zeros((*lead, n), jnp.int32),
                 weight=jnp.ones((*lead, n), dtype))

  return params, lrs, batch(ks[5], slice_size, (k,)), batch(ks[6], meta_size)


def slice_of(batches, i):
  return jax.tree_util.tree_map(lambda a: a[i], batches)


tmap = jax.tree_util.tree_map


class FirstOrderTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_k1_lr_gradient_matches_closed_form(self):
    """Appendix A, k = 1: ∂L/∂α = −∇L_meta(θ1) ⊙ ∇ℓ(θ0)."""
    params, lrs, inner, meta = make_problem(jax.random.PRNGKey(0), k=1)
    opts = lookahead.LookaheadOptions(first_order=True, meta_loss="mean")
    fn = self.variant(functools.partial(
        lookahead.meta_gradients, tanh_mlp_loss, options=opts))
    _, g_theta, g_alpha, _ = fn(params, lrs, inner, meta)

    g0 = jax.grad(tanh_mlp_loss)(params, slice_of(inner, 0))
    theta1 = tmap(lambda p, a, g: p - a * g, params, lrs, g0)
    g_meta = jax.grad(tanh_mlp_loss)(theta1, meta)
    chex.assert_trees_all_close(g_alpha, tmap(lambda gm, g: -gm * g, g_meta, g0),
                                atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(g_theta, g_meta, atol=1e-5, rtol=1e-5)

  @parameterized.parameters("mean", "last")
  def test_k_step_closed_form(self, reduction):
    """First order, k steps: ∂θ_i/∂θ0 = I and ∂θ_i/∂α = −Σ_{j<i} g_j, so
    mean: ∂L/∂α = −(1/k) Σ_i ∇L_meta(θ_i) ⊙ Σ_{j<i} g_j; last: only i = k."""
    k = 4
    params, lrs, inner, meta = make_problem(jax.random.PRNGKey(1), k=k)
    opts = lookahead.LookaheadOptions(first_order=True, meta_loss=reduction)
    loss, g_theta, g_alpha, _ = lookahead.meta_gradients(
        tanh_mlp_loss, params, lrs, inner, meta, opts)

    theta, gsum = params, tmap(jnp.zeros_like, params)
    meta_grads, cum_grads, losses = [], [], []
    for i in range(k):
      g = jax.grad(tanh_mlp_loss)(theta, slice_of(inner, i))
      theta = tmap(lambda p, a, gi: p - a * gi, theta, lrs, g)
      gsum = tmap(jnp.add, gsum, g)
      meta_grads.append(jax.grad(tanh_mlp_loss)(theta, meta))
      cum_grads.append(gsum)
      losses.append(tanh_mlp_loss(theta, meta))
    steps = range(k) if reduction == "mean" else [k - 1]
    n = len(steps)
    want_alpha = tmap(lambda *z: -sum(z[i] * z[n + i] for i in range(n)) / n,
                      *[meta_grads[i] for i in steps], *[cum_grads[i] for i in steps])
    want_theta = tmap(lambda *z: sum(z) / n, *[meta_grads[i] for i in steps])
    np.testing.assert_allclose(loss, np.mean([losses[i] for i in steps]), rtol=1e-6)
    chex.assert_trees_all_close(g_alpha, want_alpha, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(g_theta, want_theta, atol=1e-5, rtol=1e-5)


def flat_fd(fn, tree, eps):
  """Central finite differences of scalar fn w.r.t. every element of tree."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  grads = []
  for li, leaf in enumerate(leaves):
    flat = np.asarray(leaf).ravel()
    g = np.zeros_like(flat)
    for j in range(flat.size):
      for sign in (1, -1):
        bumped = flat.copy()
        bumped[j] += sign * eps
        new = list(leaves)
        new[li] = jnp.asarray(bumped.reshape(leaf.shape))
        g[j] += sign * float(fn(jax.tree_util.tree_unflatten(treedef, new)))
      g[j] /= 2 * eps
    grads.append(g.reshape(leaf.shape))
  return jax.tree_util.tree_unflatten(treedef, grads)


@pytest.mark.parametrize("reduction", ["mean", "last"])
def test_second_order_matches_finite_differences(reduction):
  with jax.enable_x64(True):
    params, lrs, inner, meta = make_problem(
        jax.random.PRNGKey(2), k=3, dtype=jnp.float64)
    opts = lookahead.LookaheadOptions(first_order=False, meta_loss=reduction)
    _, g_theta, g_alpha, _ = compiled_meta_gradients(
        tanh_mlp_loss, params, lrs, inner, meta, opts)
    f = jax.jit(lambda p, a: lookahead.lookahead_loss(
        tanh_mlp_loss, p, a, inner, meta, opts)[0])
    fd_theta = flat_fd(lambda p: f(p, lrs), params, 1e-6)
    fd_alpha = flat_fd(lambda a: f(params, a), lrs, 1e-6)
    chex.assert_trees_all_close(g_theta, fd_theta, atol=1e-7, rtol=1e-6)
    chex.assert_trees_all_close(g_alpha, fd_alpha, atol=1e-7, rtol=1e-6)
    # The first-order gradient is a different quantity here (the net is not linear).
    _, g_theta_fo, _, _ = compiled_meta_gradients(
        tanh_mlp_loss, params, lrs, inner, meta,
        lookahead.LookaheadOptions(first_order=True, meta_loss=reduction))
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(g_theta), jax.tree_util.tree_leaves(g_theta_fo)))
    assert diff > 1e-4


def compiled_meta_gradients(loss_fn, params, lrs, inner, meta, options, **kwargs):
  """`lookahead.meta_gradients` as one compiled program (op-by-op dispatch of the
  unroll is what made these tests slow)."""
  return jax.jit(functools.partial(lookahead.meta_gradients, loss_fn, options=options,
                                   **kwargs))(params, lrs, inner, meta)


def quadratic(mat, vec):
  def loss(params, batch):
    del batch
    th = params["theta"]
    return 0.5 * th @ mat @ th + vec @ th
  return loss


def test_appendix_b_second_order_weight_gradient():
  """k = 1 on quadratics: ∂L_meta(θ1)/∂θ0 = g1 − αH1g0 − αH0g1 + O(α²), where
  g0 = ∇ℓ(θ0), g1 = ∇L_meta(θ0), H0 = ∇²ℓ, H1 = ∇²L_meta (Appendix B). The
  residual here is exactly α² H0 H1 g0, so halving α quarters it."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    n = 6
    a = rng.normal(size=(n, n)); a = a @ a.T / n + np.eye(n)
    b = rng.normal(size=(n, n)); b = b @ b.T / n + np.eye(n)
    av, bv, theta0 = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    inner_loss, meta_loss = quadratic(jnp.array(a), jnp.array(av)), quadratic(
        jnp.array(b), jnp.array(bv))
    g0, g1 = a @ theta0 + av, b @ theta0 + bv
    # One inner slice (x of shape (1, 1)) and a meta batch (x of shape (1, 2)):
    # the loss function tells them apart by shape.
    inner = Batch(x=jnp.zeros((1, 1, 1)), y=jnp.zeros((1, 1), jnp.int32),
                  task=jnp.zeros((1, 1), jnp.int32), weight=jnp.ones((1, 1)))

    residuals = []
    for alpha in (0.02, 0.01):
      params = {"theta": jnp.array(theta0)}
      lrs = {"theta": jnp.full(n, alpha)}
      loss_fn = lambda p, bt: inner_loss(p, bt) if bt.x.shape == (1, 1) else meta_loss(p, bt)
      meta = Batch(x=jnp.zeros((1, 2)), y=jnp.zeros((1,), jnp.int32),
                   task=jnp.zeros((1,), jnp.int32), weight=jnp.ones((1,)))
      _, g_theta, _, _ = lookahead.meta_gradients(
          loss_fn, params, lrs, inner, meta,
          lookahead.LookaheadOptions(first_order=False, meta_loss="last"))
      expansion = g1 - alpha * b @ g0 - alpha * a @ g1
      residual = np.asarray(g_theta["theta"]) - expansion
      np.testing.assert_allclose(residual, alpha**2 * a @ b @ g0, rtol=1e-8, atol=1e-12)
      residuals.append(np.linalg.norm(residual))
    assert residuals[1] > 0
    np.testing.assert_allclose(residuals[0] / residuals[1], 4.0, rtol=1e-6)


def test_first_and_second_order_agree_iff_inner_loss_is_linear():
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    n = 5
    c = jnp.array(rng.normal(size=n))
    b = rng.normal(size=(n, n)); b = jnp.array(b @ b.T)
    params = {"theta": jnp.array(rng.normal(size=n))}
    lrs = {"theta": jnp.array(0.1 + 0.1 * rng.uniform(size=n))}
    inner = Batch(x=jnp.zeros((3, 1, 1)), y=jnp.zeros((3, 1), jnp.int32),
                  task=jnp.zeros((3, 1), jnp.int32), weight=jnp.ones((3, 1)))
    meta = Batch(x=jnp.zeros((1, 2)), y=jnp.zeros((1,), jnp.int32),
                 task=jnp.zeros((1,), jnp.int32), weight=jnp.ones((1,)))
    meta_fn = lambda th: 0.5 * th @ b @ th

    def grads(inner_fn, first_order):
      loss_fn = lambda p, bt: inner_fn(p["theta"]) if bt.x.shape == (1, 1) else meta_fn(p["theta"])
      _, gt, ga, _ = lookahead.meta_gradients(
          loss_fn, params, lrs, inner, meta,
          lookahead.LookaheadOptions(first_order=first_order, meta_loss="mean"))
      return gt, ga

    linear = lambda th: c @ th
    chex.assert_trees_all_close(grads(linear, True), grads(linear, False), atol=1e-12)
    nonlinear = lambda th: c @ th + 0.5 * jnp.sum(th**2 * jnp.arange(1, n + 1))
    fo, so = grads(nonlinear, True), grads(nonlinear, False)
    assert float(jnp.max(jnp.abs(fo[0]["theta"] - so[0]["theta"]))) > 1e-3
    assert float(jnp.max(jnp.abs(fo[1]["theta"] - so[1]["theta"]))) > 1e-3


def test_inner_step_clamp_and_relu():
  params = {"w": jnp.array([1.0, 1.0, 1.0])}
  lrs = {"w": jnp.array([0.5, -0.5, 0.5])}
  loss = lambda p, b: jnp.sum(jnp.array([10.0, 1.0, -0.1]) * p["w"])  # grads 10, 1, -0.1
  batch = None
  new, _ = lookahead.inner_step(loss, params, lrs, batch, lookahead.LookaheadOptions(
      grad_clamp=2.0, relu_lrs=True))
  np.testing.assert_allclose(new["w"], [1.0 - 0.5 * 2.0, 1.0, 1.0 + 0.05])
  new, _ = lookahead.inner_step(loss, params, lrs, batch, lookahead.LookaheadOptions())
  np.testing.assert_allclose(new["w"], [1.0 - 5.0, 1.5, 1.05])


def test_split_into_slices_rejects_bad_k():
  b = Batch(x=jnp.zeros((10, 3)), y=jnp.zeros(10, jnp.int32),
            task=jnp.zeros(10, jnp.int32), weight=jnp.ones(10))
  chex.assert_shape(lookahead.split_into_slices(b, 5).x, (5, 2, 3))
  with pytest.raises(ValueError, match="inner_steps=3"):
    lookahead.split_into_slices(b, 3)
  with pytest.raises(ValueError, match="inner_steps=11"):
    lookahead.split_into_slices(b, 11)


@pytest.mark.parametrize("reduction", ["mean", "last"])
@pytest.mark.parametrize("relu,clamp", [(False, None), (True, 0.05)])
def test_first_order_accumulation_equals_grad_through_the_unroll(reduction, relu, clamp):
  params, lrs, inner, meta = make_problem(jax.random.PRNGKey(3), k=4)
  lrs = jax.tree_util.tree_map(lambda a: a.at[..., 0].set(-0.1), lrs)  # some α < 0
  grads = {}
  for impl in ("accumulate", "unroll"):
    opts = lookahead.LookaheadOptions(first_order=True, meta_loss=reduction,
                                      relu_lrs=relu, grad_clamp=clamp,
                                      first_order_impl=impl)
    grads[impl] = compiled_meta_gradients(tanh_mlp_loss, params, lrs, inner, meta,
                                            opts)
  for a, b in zip(grads["accumulate"][:3], grads["unroll"][:3]):
    chex.assert_trees_all_close(a, b, atol=1e-6, rtol=1e-5)
  _, gt, ga, _ = compiled_meta_gradients(
      tanh_mlp_loss, params, lrs, inner, meta,
      lookahead.LookaheadOptions(first_order=True, meta_loss=reduction, relu_lrs=relu,
                                 grad_clamp=clamp), wrt_lrs=False)
  assert ga is None
  chex.assert_trees_all_close(gt, grads["unroll"][1], atol=1e-6, rtol=1e-5)


# Each option and reduction at least once (not every combination: suite time).
@pytest.mark.parametrize("relu,clamp,k,reduction", [
    (False, None, 3, "mean"), (True, 0.05, 3, "last"), (False, 0.05, 3, "mean"),
    (False, 0.05, 1, "last"), (False, None, 3, "last")])
def test_second_order_reverse_pass_equals_grad_through_the_unroll(relu, clamp, k,
                                                                  reduction):
  """The explicit reverse pass (Hessian-vector products of the stored inner
  gradients) against `jax.grad` through the whole unroll, in float64."""
  with jax.enable_x64(True):
    params, lrs, inner, meta = make_problem(jax.random.PRNGKey(4), k=k,
                                            dtype=jnp.float64)
    lrs = jax.tree_util.tree_map(lambda a: a.at[..., 0].set(-0.1), lrs)  # some α < 0
    if clamp is not None:  # the clamp must bind somewhere for the test to mean much
      g = jax.grad(tanh_mlp_loss)(params, jax.tree_util.tree_map(lambda a: a[0], inner))
      assert any(np.any(np.abs(x) > clamp) for x in jax.tree_util.tree_leaves(g))
    grads = {}
    for impl in ("hvp", "unroll"):
      opts = lookahead.LookaheadOptions(first_order=False, meta_loss=reduction,
                                        relu_lrs=relu, grad_clamp=clamp,
                                        second_order_impl=impl)
      grads[impl] = compiled_meta_gradients(tanh_mlp_loss, params, lrs, inner, meta,
                                             opts)
    for a, b in zip(grads["hvp"][:3], grads["unroll"][:3]):
      chex.assert_trees_all_close(a, b, atol=1e-12, rtol=1e-10)
    chex.assert_trees_all_close(grads["hvp"][3]["inner_loss"],
                                grads["unroll"][3]["inner_loss"], rtol=1e-12)
    _, gt, ga, _ = compiled_meta_gradients(
        tanh_mlp_loss, params, lrs, inner, meta,
        lookahead.LookaheadOptions(first_order=False, meta_loss=reduction,
                                   relu_lrs=relu, grad_clamp=clamp), wrt_lrs=False)
    assert ga is None
    chex.assert_trees_all_close(gt, grads["unroll"][1], atol=1e-12, rtol=1e-10)


# Uneven slices (`pad_into_slices`): the official Meta-BGD splits B = 10 into
# k = 3 slices of ⌈10/3⌉ = 4 (torch-style slicing: 4, 4, 2); B = 2 into 1, 1.


def ce_loss(params, batch):
  """The tanh net scored by `heads.cross_entropy` (denominator max(Σw, tiny)), so
  that an all-padding slice has a finite loss and a zero gradient."""
  h = jnp.tanh(batch.x @ params["w1"] + params["b1"])
  return heads.cross_entropy(h @ params["w2"] + params["b2"], batch, None)


def torch_split(batch, size):
  """Consecutive chunks of `size` rows, the last shorter: torch.split by hand."""
  n = batch.y.shape[0]
  return [jax.tree_util.tree_map(lambda a: a[i:i + size], batch)
          for i in range(0, n, size)]


def hand_meta_grads(params, lrs, slices, meta, first_order, reduction, clamp):
  """Meta-loss gradients of a Python unroll over the given slices, by jax.grad."""
  def meta_loss(p, a):
    metas = []
    for sl in slices:
      g = jax.grad(ce_loss)(p, sl)
      if first_order:
        g = jax.lax.stop_gradient(g)
      if clamp is not None:
        g = tmap(lambda x: jnp.clip(x, -clamp, clamp), g)
      p = tmap(lambda t, al, x: t - al * x, p, a, g)
      metas.append(ce_loss(p, meta))
    return sum(metas) / len(metas) if reduction == "mean" else metas[-1]
  loss, (gt, ga) = jax.value_and_grad(meta_loss, argnums=(0, 1))(params, lrs)
  return loss, gt, ga


def test_pad_into_slices_is_torch_split_with_zero_weight_padding():
  b = Batch(x=jnp.arange(10.0)[:, None], y=jnp.arange(10) % 3,
            task=jnp.zeros(10, jnp.int32), weight=jnp.ones(10))
  sl = lookahead.pad_into_slices(b, 3)
  chex.assert_shape(sl.x, (3, 4, 1))
  np.testing.assert_array_equal(sl.weight, [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
  np.testing.assert_array_equal(sl.x[:, :, 0][sl.weight > 0], np.arange(10))
  for chunk, i in zip(torch_split(b, 4), range(3)):
    n = chunk.y.shape[0]
    np.testing.assert_array_equal(sl.x[i, :n], chunk.x)
    np.testing.assert_array_equal(sl.y[i, :n], chunk.y)
  assert lookahead.slice_sizes(10, 3) == [4, 4, 2]
  assert lookahead.slice_sizes(2, 3) == [1, 1, 0]
  assert lookahead.slice_sizes(10, 6) == [2, 2, 2, 2, 2, 0]
  np.testing.assert_array_equal(lookahead.live_slices(lookahead.pad_into_slices(
      jax.tree_util.tree_map(lambda a: a[:2], b), 3)), [1, 1, 0])
  # Divisible k: exactly split_into_slices.
  chex.assert_trees_all_equal(lookahead.pad_into_slices(b, 5),
                              lookahead.split_into_slices(b, 5))
  with pytest.raises(ValueError, match="inner_steps=0"):
    lookahead.pad_into_slices(b, 0)


IMPLS = [(True, "accumulate"), (True, "unroll"), (False, "hvp"), (False, "unroll")]
# Every implementation on 4, 4, 2; the fast ones (accumulate, hvp) also with an
# empty slice under the 'last' meta-loss, and hvp with a binding clamp (suite time).
FAST = (IMPLS[0], IMPLS[2])
UNEVEN_CASES = (
    [(10, 3, None, fo, impl, "mean") for fo, impl in IMPLS] +
    [(2, 3, None, fo, impl, "last") for fo, impl in FAST] +
    [(10, 3, 0.05, fo, impl, "mean") for fo, impl in FAST[1:]])


@pytest.mark.parametrize("b,k,clamp,first_order,impl,reduction", UNEVEN_CASES)
def test_uneven_slices_equal_a_hand_unroll(b, k, clamp, first_order, impl, reduction):
  """Padded [k, ⌈b/k⌉] slices against a hand unroll over torch.split's chunks
  (10, 3: sizes 4, 4, 2; 2, 3: two slices of 1, the third empty and skipped)."""
  with jax.enable_x64(True):
    params, lrs, _, meta = make_problem(jax.random.PRNGKey(5), k=1, dtype=jnp.float64)
    stream = make_problem(jax.random.PRNGKey(6), k=1, slice_size=b,
                          dtype=jnp.float64)[2]
    stream = slice_of(stream, 0)
    chunks = torch_split(stream, -(-b // k))
    assert [c.y.shape[0] for c in chunks] == ([4, 4, 2] if b == 10 else [1, 1])
    if clamp is not None:  # the clamp must bind for the case to mean much
      g = jax.grad(ce_loss)(params, chunks[0])
      assert any(np.any(np.abs(x) > clamp) for x in jax.tree_util.tree_leaves(g))
    opts = lookahead.LookaheadOptions(
        first_order=first_order, meta_loss=reduction, grad_clamp=clamp,
        first_order_impl=impl if first_order else "accumulate",
        second_order_impl=impl if not first_order else "hvp")
    # Both compiled (one program each, not op-by-op dispatch: suite time).
    loss, gt, ga, _ = jax.jit(functools.partial(
        lookahead.meta_gradients, ce_loss, options=opts))(
            params, lrs, lookahead.pad_into_slices(stream, k), meta)
    want_loss, want_t, want_a = jax.jit(functools.partial(
        hand_meta_grads, first_order=first_order, reduction=reduction, clamp=clamp))(
            params, lrs, chunks, meta)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    chex.assert_trees_all_close(gt, want_t, atol=1e-12, rtol=1e-10)
    chex.assert_trees_all_close(ga, want_a, atol=1e-12, rtol=1e-10)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves((gt, ga)))


def test_remat_checkpoints_each_inner_step_of_the_unroll():
  """`remat` puts each inner step of the autodiff unroll under `jax.checkpoint`
  (the backward pass recomputes its activations) and changes no number."""
  params, lrs, inner, meta = make_problem(jax.random.PRNGKey(3), k=3)
  grads = {}
  for remat in (False, True):
    opts = lookahead.LookaheadOptions(first_order=False, second_order_impl="unroll",
                                      remat=remat)
    fn = lambda p, a, o=opts: lookahead.meta_gradients(tanh_mlp_loss, p, a, inner,
                                                       meta, o)[1:3]
    text = str(jax.make_jaxpr(fn)(params, lrs))
    assert ("checkpoint" in text or "remat" in text) == remat
    grads[remat] = jax.jit(fn)(params, lrs)
  chex.assert_trees_all_close(grads[False], grads[True], rtol=1e-5, atol=1e-7)
