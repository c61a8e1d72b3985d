"""Meta-BGD: BGD's closed-form step against its formulas, and the learner against
hand computations (plain jax.grad through a Python unroll, BGD written out in
numpy)."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamaml_jax import bgd
from lamaml_jax import learners
from lamaml_jax import networks
from lamaml_jax.learners import meta_bgd
from lamaml_jax.types import Batch
from learner_util import (NET, context, finite_after_nan_input, flat, hand_ce,
                          init_swept, jit_once, make_batch)

tmap = jax.tree_util.tree_map
NO_CLIP = 1e6
ETA, STD0, ALPHA = 2.0, 0.05, 0.1


def zero_noise(key, like, num):
  del key
  return tmap(lambda x: jnp.zeros((num, *jnp.shape(x)), x.dtype), like)


def fixed_noise(key, like, num):
  """ε⁽ⁿ⁾ fixed by each leaf's shape and n alone (not by the key)."""
  del key

  def leaf(x):
    shape = jnp.shape(x)
    rng = np.random.default_rng(int(np.prod(shape)) + 7 * len(shape))
    return jnp.asarray(rng.normal(size=(num, *shape)), x.dtype)
  return tmap(leaf, like)


def build(noise_fn, classes_per_task=None, **kw):
  hp = meta_bgd.MetaBGDHparams(**{
      "alpha_init": ALPHA, "std_init": STD0, "mean_eta": ETA, "mc_iters": 2,
      "glances": 1, "inner_steps": 1, "grad_clip_norm": NO_CLIP,
      "replay_batch_size": 8, "memory_size": 8, **kw})
  return meta_bgd.make(hp, context(classes_per_task), noise_fn=noise_fn)


def clip(tree, max_norm):
  norm = np.sqrt(sum(float(jnp.sum(x * x)) for x in jax.tree_util.tree_leaves(tree)))
  return tmap(lambda x: x * min(1.0, max_norm / norm), tree), norm


@jax.jit
def hand_meta_grads(params, alpha, slices, meta, clamp=None):
  """(∂L/∂θ0, ∂L/∂α) of L = mean_i CE(θ_i; meta), θ_{i+1} = θ_i − α ⊙ c(∇CE(θ_i;
  slice_i)): jax.grad through a Python loop over the slices (second order)."""
  def meta_loss(p, a):
    losses = []
    for sl in slices:
      g = jax.grad(hand_ce)(p, sl)
      if clamp is not None:
        g = tmap(lambda x: jnp.clip(x, -clamp, clamp), g)
      p = tmap(lambda t, al, x: t - al * x, p, a, g)
      losses.append(hand_ce(p, meta))
    return sum(losses) / len(losses)
  return jax.grad(meta_loss, argnums=(0, 1))(params, alpha)


def rows(b: Batch, idx) -> Batch:
  return tmap(lambda a: a[np.asarray(idx)], b)


def join(*batches: Batch) -> Batch:
  return tmap(lambda *xs: jnp.concatenate(xs), *batches)


def bgd_by_hand(mu, sigma, grads, eps, eta):
  """BGD (Zeno et al. 2018) in float64 from flat per-pass gradients and noise."""
  e_g = np.mean(grads, axis=0)
  e_ge = np.mean([g * e for g, e in zip(grads, eps)], axis=0)
  return (mu - eta * sigma**2 * e_g,
          sigma * np.sqrt(1 + (sigma * e_ge / 2)**2) - sigma**2 * e_ge / 2)


# --- BGD ----------------------------------------------------------------------


def test_bgd_update_matches_formulas_with_fixed_noise():
  """μ ← μ − ησ²E_g, σ ← σ√(1 + (σE_gε/2)²) − σ²E_gε/2 on a quadratic loss
  L(θ) = Σ ½ a θ² + b θ, g = aθ + b, from three fixed noise samples."""
  rng = np.random.default_rng(0)
  d, n, eta = 7, 3, 0.7
  f32 = lambda x: np.float32(x).astype(np.float64)  # exact in both precisions
  mu, sigma = f32(rng.normal(size=d)), f32(rng.uniform(0.01, 0.3, size=d))
  a, b = rng.uniform(0.5, 3.0, size=d), rng.normal(size=d)
  eps = f32(rng.normal(size=(n, d)))
  state = bgd.BGDState(mean={"w": jnp.float32(mu)}, std={"w": jnp.float32(sigma)})
  thetas = [bgd.sample(state, {"w": jnp.float32(e)})["w"] for e in eps]
  np.testing.assert_allclose(thetas, mu + sigma * eps, rtol=1e-6, atol=1e-7)
  grads = [a * np.float64(t) + b for t in thetas]
  e_g, e_ge = bgd.expectations({"w": jnp.float32(np.stack(grads))}, {"w": jnp.float32(eps)})
  new = bgd.update(state, e_g, e_ge, eta)
  want_mu, want_sigma = bgd_by_hand(mu, sigma, grads, list(eps), eta)
  np.testing.assert_allclose(new.mean["w"], want_mu, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new.std["w"], want_sigma, rtol=1e-5)


def test_bgd_std_update_stays_positive_without_cancellation():
  """For large σE_gε the closed form's two terms cancel; float64 of the same
  formula is the reference (float32 as written would round σ to 0)."""
  sigma = np.array([0.02, 0.02, 0.02, 0.5], np.float64)
  e_ge = np.array([1e6, -1e6, 0.0, 3.0])
  new = bgd.update(bgd.BGDState(jnp.zeros(4), jnp.float32(sigma)), jnp.zeros(4),
                   jnp.float32(e_ge), 1.0)
  u = sigma * e_ge / 2
  want = sigma * (np.sqrt(1 + u**2) - u)
  assert np.all(np.asarray(new.std) > 0)
  np.testing.assert_allclose(new.std, want, rtol=1e-5)


def test_bgd_zero_noise_mean_step_is_scaled_sgd():
  """ε = 0: E_gε = 0 leaves σ unchanged, and μ ← μ − (ησ²) g: SGD with step ησ²."""
  mu, sigma, g = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.1, 0.2, 0.3]), jnp.array(
      [0.3, -1.0, 2.0])
  state = bgd.BGDState(mu, sigma)
  eps = jnp.zeros((2, 3))
  assert np.all(bgd.sample(state, eps[0]) == mu)
  e_g, e_ge = bgd.expectations(jnp.stack([g, g]), eps)
  new = bgd.update(state, e_g, e_ge, 50.0)
  np.testing.assert_allclose(new.mean, mu - 50.0 * sigma**2 * g, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(new.std, sigma)


def test_bgd_noise_shapes_and_moments():
  like = {"a": jnp.zeros((30, 40)), "b": jnp.zeros(())}
  eps = bgd.noise(jax.random.PRNGKey(0), like, 5)
  chex.assert_shape(eps["a"], (5, 30, 40))
  chex.assert_shape(eps["b"], (5,))
  assert abs(float(jnp.mean(eps["a"]))) < 0.05 and abs(float(jnp.std(eps["a"])) - 1) < 0.05
  assert not np.allclose(eps["a"][0], eps["a"][1])
  state = bgd.init(like, 0.02)
  np.testing.assert_array_equal(state.std["a"], np.full((30, 40), 0.02, np.float32))
  assert state.mean is like


# --- the learner ------------------------------------------------------------------


def test_mc_passes_equal_each_pass_by_hand():
  """Fixed noise, 'bayesian' α, k = 2 on B = 3 (slices of 2 and 1), 2 passes from an
  empty memory: the vmapped passes give what each pass computed separately by
  hand gives, through BGD's formulas, for one of the 3! shuffles (the test cannot
  know which the learner drew). Then more calls: one trace, finite metrics."""
  learner = build(fixed_noise, bgd_alpha="bayesian", inner_steps=2,
                  replay_batch_size=2, memory_size=6)
  observe = jit_once(learner.observe)
  b = make_batch(0, n=3)
  s0 = learner.init(jax.random.PRNGKey(1), b)
  s1, metrics = observe(s0, b, jnp.int32(0))
  assert bool(metrics["finite"])

  mu, sigma = s0.weights
  mu_a, sigma_a = s0.lrs
  eps = fixed_noise(None, mu, 2)  # α's leaves have the same shapes: the same ε
  got = [flat(s1.weights.mean), flat(s1.weights.std), flat(s1.lrs.mean),
         flat(s1.lrs.std)]
  scale = 3.0  # real samples of the meta batch: no replay yet + 3 stream
  matches = 0
  for perm in itertools.permutations(range(3)):
    stream = rows(b, perm)
    slices = (rows(stream, [0, 1]), rows(stream, [2]))  # torch.split(stream, 2)
    g_w, g_a, e_w = [], [], []
    for n in range(2):
      e = tmap(lambda x: x[n], eps)
      theta = tmap(lambda m, s, x: m + s * x, mu, sigma, e)
      alpha = tmap(lambda m, s, x: m + s * x, mu_a, sigma_a, e)
      gt, ga = hand_meta_grads(theta, alpha, slices, b)
      g_w.append(scale * flat(gt))
      g_a.append(scale * flat(ga))
      e_w.append(flat(e))
    want = [*bgd_by_hand(flat(mu), flat(sigma), g_w, e_w, ETA),
            *bgd_by_hand(flat(mu_a), flat(sigma_a), g_a, e_w, ETA)]
    matches += all(np.allclose(g, w, rtol=2e-4, atol=1e-6) for g, w in zip(got, want))
  assert matches == 2  # the two shuffles with the same first slice
  assert not np.allclose(got[1], flat(sigma)) and not np.allclose(got[3], flat(sigma_a))

  s2, m2 = observe(s1, make_batch(1, n=3), jnp.int32(0))
  s3, m3 = observe(s2, make_batch(2, n=3), jnp.int32(1))
  assert bool(m2["finite"]) and bool(m3["finite"]) and np.isfinite(float(m3["loss"]))
  assert int(s3.step) == 3 and int(s2.memory.size) == 6 and int(s3.memory.seen) == 6


@pytest.fixture(scope="module")
def default_learner():
  """Defaults (fixed α, shared data per glance, meta-batch scale), zero noise, k = 1,
  memory = R = 8, θ-clip 0.05; compiled once."""
  learner = build(zero_noise, grad_clip_norm=0.05)
  return learner, jit_once(learner.observe)


def test_zero_noise_mean_step_is_scaled_sgd(default_learner):
  """ε = 0 in every pass: μ ← μ − η σ₀² S clip(∇θ L(μ)), σ and α unchanged; S =
  the meta batch's real samples (4 stream; then 4 replayed + 4 stream: the memory
  holds exactly the first batch, drawn without replacement)."""
  learner, observe = default_learner
  b1, b2 = make_batch(1), make_batch(2)
  s0 = learner.init(jax.random.PRNGKey(3), b1)
  alpha = tmap(lambda p: jnp.float32(ALPHA), s0.params)
  s1, _ = observe(s0, b1, jnp.int32(0))
  s2, _ = observe(s1, b2, jnp.int32(0))
  for before, after, stream, meta, scale in ((s0, s1, b1, b1, 4.0),
                                             (s1, s2, b2, join(b1, b2), 8.0)):
    g, _ = hand_meta_grads(before.params, alpha, (stream,), meta)
    g, norm = clip(g, 0.05)
    assert norm > 0.05  # the clip binds
    want = flat(before.params) - ETA * STD0**2 * scale * flat(g)
    np.testing.assert_allclose(flat(after.params), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(flat(after.weights.std), flat(before.weights.std))
  chex.assert_trees_all_equal(s2.lrs, s0.lrs)  # 'fixed': α = alpha_init throughout
  np.testing.assert_array_equal(flat(s2.lrs.mean), np.float32(ALPHA))
  assert finite_after_nan_input(learner, observe, b1) is False


def test_predict_uses_the_means(default_learner):
  learner, observe = default_learner
  b = make_batch(4)
  state, _ = observe(learner.init(jax.random.PRNGKey(5), b), b, jnp.int32(0))
  want = NET.apply({"params": state.weights.mean}, b.x)
  np.testing.assert_allclose(learner.predict(state, b.x, jnp.int32(0)), want, rtol=1e-6)
  wide = state._replace(weights=state.weights._replace(
      std=tmap(lambda s: 100 * s, state.weights.std)))
  np.testing.assert_array_equal(learner.predict(wide, b.x, jnp.int32(0)),
                                learner.predict(state, b.x, jnp.int32(0)))
  masked = build(zero_noise, classes_per_task=2).predict(state, b.x, jnp.int32(1))
  assert np.all(np.isneginf(masked[:, :2]))
  np.testing.assert_allclose(masked[:, 2:], want[:, 2:], rtol=1e-6)


def test_official_options_by_hand():
  """'bayesian' α, zero noise, k = 1, passes with their own data, later passes
  seeing the call's push, stream-batch scale, α-gradients unclipped, inner clamp.
  Call 2: pass 0 replays the memory before the call (batch 1), pass 1 the memory
  with batch 2 pushed (both batches: capacity 8 = R, no reservoir draw)."""
  b1, b2 = make_batch(6), make_batch(7)
  probe = build(zero_noise, bgd_alpha="bayesian")
  s0 = probe.init(jax.random.PRNGKey(8), b1)
  gt, ga = hand_meta_grads(s0.params, s0.lrs.mean, (b1,), b1, 0.05)
  max_norm = 0.5 * min(clip(gt, 1.0)[1], clip(ga, 1.0)[1])  # binds on both
  learner = build(zero_noise, bgd_alpha="bayesian", mc_fresh_data=True,
                  later_passes_see_push=True, grad_scale="stream_batch",
                  clip_alpha_grads=False, inner_grad_clamp=0.05,
                  grad_clip_norm=max_norm)
  observe = jax.jit(learner.observe)
  s1, _ = observe(s0, b1, jnp.int32(0))
  s2, _ = observe(s1, b2, jnp.int32(0))
  for before, after, stream, metas in (
      (s0, s1, b1, (b1, join(b1, b1))),
      (s1, s2, b2, (join(b1, b2), join(b1, b2, b2)))):
    g_w, g_a = [], []
    for meta in metas:
      gt, ga = hand_meta_grads(before.params, before.lrs.mean, (stream,), meta, 0.05)
      g_w.append(4.0 * flat(clip(gt, max_norm)[0]))  # S = B = 4
      g_a.append(4.0 * flat(ga))  # unclipped
    zeros = [np.zeros_like(g_w[0])] * 2
    want = [*bgd_by_hand(flat(before.weights.mean), flat(before.weights.std), g_w,
                         zeros, ETA),
            *bgd_by_hand(flat(before.lrs.mean), flat(before.lrs.std), g_a, zeros, ETA)]
    got = [flat(after.weights.mean), flat(after.weights.std), flat(after.lrs.mean),
           flat(after.lrs.std)]
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
  assert not np.allclose(flat(s2.lrs.mean), flat(s0.lrs.mean))


def test_xavier_init_is_the_official_one():
  """Kernels N(0, 2/(fan_in + fan_out)) (conv fans times the 3x3 field), conv
  biases N(0, 2/(1 + 9 C_out)), dense biases 0 (official `--xav_init`)."""
  net = networks.ConvNet(num_convs=1, channels=64, hidden=(), num_outputs=300)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
  new = meta_bgd.xavier_params(jax.random.PRNGKey(1), params)
  conv, dense = new["Conv_0"], new["Dense_0"]
  np.testing.assert_allclose(np.std(conv["kernel"]), np.sqrt(2 / (27 + 9 * 64)), rtol=0.1)
  np.testing.assert_allclose(np.std(dense["kernel"]), np.sqrt(2 / (1024 + 300)), rtol=0.05)
  np.testing.assert_allclose(np.std(conv["bias"]), np.sqrt(2) / np.sqrt(1 + 9 * 64),
                             rtol=0.3)
  np.testing.assert_array_equal(dense["bias"], 0.0)
  assert abs(float(np.mean(dense["kernel"]))) < 0.005
  b = make_batch(0)
  kaiming = build(zero_noise).init(jax.random.PRNGKey(2), b)
  xavier = build(zero_noise, xavier_init=True).init(jax.random.PRNGKey(2), b)
  assert not np.allclose(xavier.params["Dense_0"]["kernel"],
                         kaiming.params["Dense_0"]["kernel"])
  np.testing.assert_array_equal(xavier.params["Dense_0"]["bias"], 0.0)


def test_sweepable_scalars_and_registry():
  learner = build(zero_noise, bgd_alpha="bayesian")
  state = init_swept(learner, make_batch(0), alpha_init=0.3, std_init=0.01, mean_eta=7.0)
  np.testing.assert_allclose(flat(state.lrs.mean), 0.3, rtol=1e-6)
  np.testing.assert_allclose(flat(state.weights.std), 0.01, rtol=1e-6)
  np.testing.assert_allclose(flat(state.lrs.std), 0.01, rtol=1e-6)
  assert float(state.mean_eta) == 7.0
  method = learners.method("meta_bgd")
  hp = learners.make_hparams("meta_bgd", {"memory_size": 400})
  assert method.memory_samples(hp, context()) == 400
  assert (hp.bgd_alpha, hp.grad_scale, hp.clip_alpha_grads, hp.mc_fresh_data,
          hp.later_passes_see_push, hp.xavier_init, hp.reservoir_inclusive_randint,
          hp.replay_with_replacement, hp.inner_grad_clamp) == (
              "fixed", "meta_batch", True, False, False, False, False, False, None)
  summary = learner.summary(state)
  np.testing.assert_allclose(summary["weight_std_mean"], 0.01, rtol=1e-5)


@pytest.mark.parametrize("kw,pattern", [
    (dict(bgd_alpha="sampled"), "bgd_alpha must be 'fixed'"),
    (dict(grad_scale="batch"), "grad_scale must be 'meta_batch' or 'stream_batch'"),
    (dict(mc_iters=0), "mc_iters must be an integer >= 1"),
    (dict(inner_steps=0), "inner_steps must be an integer >= 1"),
    (dict(std_init=0.0), "std_init must be a finite number > 0"),
    (dict(mean_eta=-1.0), "mean_eta must be a finite number >= 0"),
    (dict(grad_clip_norm=0.0), "grad_clip_norm must be a finite number > 0"),
    (dict(replay_batch_size=20, memory_size=10), "replay_batch_size=20 exceeds"),
])
def test_invalid_hyperparameters(kw, pattern):
  with pytest.raises(ValueError, match=pattern):
    meta_bgd.MetaBGDHparams(**kw)
