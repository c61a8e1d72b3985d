"""The MLP fast path against Appendix A's closed form and the generic look-ahead."""
import functools

import chex
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from lamaml_jax import lookahead
from lamaml_jax import mlp_lookahead
from lamaml_jax import networks
from lamaml_jax.learners import base
from lamaml_jax.types import Batch

tmap = jax.tree_util.tree_map
NUM_OUTPUTS = 6


def make_problem(key, k, s, meta_replay=4, cpt=None, lr_sign_flip=False):
  """A 12-7-6-6 MLP, k slices of s samples, meta batch = [replay; stream]."""
  net = networks.MLP(hidden=(7, 6), num_outputs=NUM_OUTPUTS)
  ks = jax.random.split(key, 6)
  b = k * s

  def batch(kk, n):
    kx, ky, kt = jax.random.split(kk, 3)
    task = jax.random.randint(kt, (n,), 0, 2)
    lo = 0 if cpt is None else task * cpt
    y = lo + jax.random.randint(ky, (n,), 0, NUM_OUTPUTS if cpt is None else cpt)
    # Sparse, non-negative inputs like MNIST pixels.
    x = jax.random.uniform(kx, (n, 3, 4)) * (jax.random.uniform(ks[5], (n, 3, 4)) > 0.4)
    return Batch(x=x, y=y.astype(jnp.int32), task=task.astype(jnp.int32),
                 weight=jnp.ones((n,)))

  stream = batch(ks[0], b)
  replay = batch(ks[1], meta_replay)
  replay = replay._replace(weight=replay.weight.at[-1].set(0.0))  # an empty slot
  meta = base.concat_batches(replay, stream)
  params = net.init(ks[2], stream.x)["params"]
  lrs = tmap(lambda p, kk: 0.05 + 0.2 * jax.random.uniform(kk, p.shape), params,
             dict(zip(params, [dict(zip(v, jax.random.split(kk, 2)))
                               for v, kk in zip(params.values(),
                                                jax.random.split(ks[3], 3))])))
  if lr_sign_flip:  # some negative learning rates: relu(α) and ρ = relu'(α) matter
    lrs = tmap(lambda a, kk: jnp.where(jax.random.uniform(kk, a.shape) < 0.3, -a, a),
               lrs, tmap(lambda _: ks[4], lrs))
  loss_fn = base.make_loss(net, cpt)
  return net, loss_fn, params, lrs, lookahead.split_into_slices(stream, k), meta


class ClosedFormTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_k1_matches_appendix_a(self):
    """k = 1: ∂L/∂θ0 = ∇L_meta(θ1) and ∂L/∂α = −∇L_meta(θ1) ⊙ ∇ℓ(θ0)."""
    _, loss_fn, params, lrs, inner, meta = make_problem(jax.random.PRNGKey(0), 1, 1)
    opts = lookahead.LookaheadOptions(first_order=True, relu_lrs=False)
    fn = self.variant(functools.partial(
        mlp_lookahead.meta_gradients, options=opts, stream_offset=4))
    loss, g_theta, g_alpha, aux = fn(params, lrs, inner, meta)

    slice0 = tmap(lambda a: a[0], inner)
    g0 = jax.grad(loss_fn)(params, slice0)
    theta1 = tmap(lambda p, a, g: p - a * g, params, lrs, g0)
    meta_loss, g1 = jax.value_and_grad(loss_fn)(theta1, meta)
    chex.assert_trees_all_close(loss, meta_loss, rtol=1e-5)
    chex.assert_trees_all_close(g_theta, g1, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(g_alpha, tmap(lambda a, b: -a * b, g1, g0),
                                rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(aux["inner_loss"], loss_fn(params, slice0)[None],
                                rtol=1e-6)


class MatchesGenericTest(parameterized.TestCase):

  @parameterized.parameters(
      (4, 1, True, True, None), (4, 1, False, False, 3), (1, 2, True, False, None),
      (3, 2, False, True, 3), (4, 1, True, True, 3), (1, 1, False, True, None))
  def test_matches_lookahead(self, k, s, relu_lrs, with_offset, cpt):
    _, loss_fn, params, lrs, inner, meta = make_problem(
        jax.random.PRNGKey(k * 10 + s), k, s, cpt=cpt, lr_sign_flip=True)
    opts = lookahead.LookaheadOptions(first_order=True, relu_lrs=relu_lrs)
    want = jax.jit(functools.partial(lookahead.meta_gradients, loss_fn,
                                     options=opts))(params, lrs, inner, meta)
    got = jax.jit(functools.partial(
        mlp_lookahead.meta_gradients, options=opts, classes_per_task=cpt,
        stream_offset=4 if with_offset else None))(params, lrs, inner, meta)
    for w, g in zip(want[:3], got[:3]):
      chex.assert_trees_all_close(g, w, rtol=2e-5, atol=1e-6)
    chex.assert_trees_all_close(got[3]["inner_loss"], want[3]["inner_loss"], rtol=1e-5)

  def test_without_lr_gradient(self):
    _, loss_fn, params, lrs, inner, meta = make_problem(jax.random.PRNGKey(3), 3, 1)
    opts = lookahead.LookaheadOptions(first_order=True, relu_lrs=True)
    want = lookahead.meta_gradients(loss_fn, params, lrs, inner, meta, opts,
                                    wrt_lrs=False)
    got = mlp_lookahead.meta_gradients(params, lrs, inner, meta, opts, wrt_lrs=False)
    self.assertIsNone(got[2])
    chex.assert_trees_all_close(got[1], want[1], rtol=2e-5, atol=1e-6)


class DistinctPairsTest(parameterized.TestCase):

  @parameterized.parameters((10, 20, 10, 20), (3, 7, 2, 7), (4, 9, 5, 5))
  def test_pairs_stand_for_every_product(self, b, e, offset, m):
    x_rows = np.random.default_rng(0).normal(size=(e, 3))
    x_inner = x_rows[offset:offset + b]
    pair_u, pair_row, index, sources = mlp_lookahead.distinct_pairs(b, e, offset, m)
    overlap = max(0, min(b, e - offset))  # inner samples that are rows
    self.assertLen(pair_u, b * e - overlap * (overlap - 1) // 2)
    products = x_inner[pair_u] * x_rows[pair_row]
    np.testing.assert_array_equal(products[index], x_inner[:, None] * x_rows[None])
    # Each (u, row < m) is a source of exactly its pair, once.
    flat = sources[sources < b * m]
    self.assertCountEqual(flat.tolist(), range(b * m))
    for q, srcs in enumerate(sources):
      for f in srcs[srcs < b * m]:
        self.assertEqual(index[f // m, f % m], q)


class TailTest(chex.TestCase):

  def test_group_gradients_match_autodiff(self):
    net, loss_fn, params, _, _, meta = make_problem(jax.random.PRNGKey(5), 2, 1, cpt=3)
    kernel, tail = mlp_lookahead.split(params)
    chex.assert_trees_all_equal(mlp_lookahead.merge(kernel, tail), params)
    z = meta.x.reshape(meta.x.shape[0], -1) @ kernel
    groups = ((0, 4), (4, 6))
    losses, grads, dz = mlp_lookahead.tail_value_and_grads(
        tail, z, meta.y, meta.task, meta.weight, groups, 3)
    for g, (a, b) in enumerate(groups):
      part = tmap(lambda x, a=a, b=b: x[a:b], meta)
      want_loss, want = jax.value_and_grad(loss_fn)(params, part)
      np.testing.assert_allclose(losses[g], want_loss, rtol=1e-6)
      chex.assert_trees_all_close(mlp_lookahead.merge(want[mlp_lookahead.FIRST]["kernel"],
                                                      grads[g]), want, rtol=1e-5, atol=1e-7)
      # Each row's ∂/∂z belongs to its own group's loss: W's gradient is xᵀ dz.
      x = part.x.reshape(b - a, -1)
      np.testing.assert_allclose(x.T @ dz[a:b], want[mlp_lookahead.FIRST]["kernel"],
                                 rtol=1e-5, atol=1e-7)


class ApplicabilityTest(parameterized.TestCase):

  def test_applicable(self):
    mlp = networks.MLP()
    fo = lookahead.LookaheadOptions(first_order=True)
    self.assertTrue(mlp_lookahead.applicable(mlp, fo, 1))
    self.assertFalse(mlp_lookahead.applicable(mlp, fo, 2))
    self.assertFalse(mlp_lookahead.applicable(networks.ConvNet(), fo, 1))
    for change in (dict(first_order=False), dict(meta_loss="last"),
                   dict(grad_clamp=1.0)):
      opts = lookahead.LookaheadOptions(**{**dict(first_order=True), **change})
      self.assertFalse(mlp_lookahead.applicable(mlp, opts, 1), change)

  @parameterized.parameters(dict(first_order=False), dict(meta_loss="last"),
                            dict(grad_clamp=1.0))
  def test_rejects_other_options(self, **change):
    _, _, params, lrs, inner, meta = make_problem(jax.random.PRNGKey(0), 2, 1)
    opts = lookahead.LookaheadOptions(**{**dict(first_order=True), **change})
    with self.assertRaisesRegex(ValueError, "lookahead.meta_gradients"):
      mlp_lookahead.meta_gradients(params, lrs, inner, meta, opts)
