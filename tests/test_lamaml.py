"""La-MAML family learners: update rules, tracing, validation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lamaml_jax import networks
from lamaml_jax.learners import base
from lamaml_jax.learners import lamaml
from lamaml_jax.types import Batch

NET = networks.MLP(hidden=(8,), num_outputs=3)
CONTEXT = base.BuildContext(network=NET, num_outputs=3, classes_per_task=None,
                            num_tasks=4, samples_per_task=8, batch_size=4, epochs=1,
                            steps_per_task=2, input_shape=(5,))


def make(hp):
  """The learner with `observe` compiled (the runner compiles it in its programs)."""
  learner = lamaml.make(hp, CONTEXT)
  return learner._replace(observe=jax.jit(learner.observe))


def batch(key, n=4, task=0, dim=5):
  kx, ky = jax.random.split(key)
  return Batch(x=jax.random.normal(kx, (n, dim)), y=jax.random.randint(ky, (n,), 0, 3),
               task=jnp.full((n,), task, jnp.int32), weight=jnp.ones(n))


def hparams(method, **kw):
  base = dict(alpha_init=0.1, opt_lr=0.2, opt_wt=0.05, glances=1, inner_steps=2,
              replay_batch_size=2, memory_size=6, grad_clip_norm=1e6,
              relu_inner_lrs=False)
  base.update(lamaml.preset(method))
  base.update(kw)
  return lamaml.LaMAMLHparams(**base)


def loss(params, b):
  logits = NET.apply({"params": params}, b.x)
  ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, b.y[:, None], -1)[:, 0]
  return jnp.mean(ce)


def first_order_k1_grads(params, lrs, b):
  """k = 1, first order, meta batch = stream batch: ∇θ = ∇L(θ1), ∇α = −∇L(θ1) ⊙ g0."""
  g0 = jax.grad(loss)(params, b)
  theta1 = jax.tree_util.tree_map(lambda p, a, g: p - a * g, params, lrs, g0)
  gm = jax.grad(loss)(theta1, b)
  return gm, jax.tree_util.tree_map(lambda x, y: -x * y, gm, g0)


def test_sync_steps_weights_with_opt_wt_and_lrs_with_opt_lr():
  hp = hparams("sync", inner_steps=1)
  learner = make(hp)
  b = batch(jax.random.PRNGKey(0))
  s0 = learner.init(jax.random.PRNGKey(1), b)
  s1, _ = learner.observe(s0, b, jnp.int32(0))  # empty memory: meta batch = stream
  g_w, g_a = first_order_k1_grads(s0.params, s0.lrs, b)
  chex.assert_trees_all_close(
      s1.params, jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, s0.params, g_w),
      atol=1e-6)
  chex.assert_trees_all_close(
      s1.lrs, jax.tree_util.tree_map(lambda a, g: a - 0.2 * g, s0.lrs, g_a), atol=1e-6)


def test_lamaml_weight_step_uses_relu_of_updated_lrs():
  learner = make(hparams("lamaml", inner_steps=1))
  b = batch(jax.random.PRNGKey(0))
  s0 = learner.init(jax.random.PRNGKey(1), b)
  # One learning-rate element far below zero stays negative after the α step.
  lrs = s0.lrs
  lrs["Dense_0"]["kernel"] = lrs["Dense_0"]["kernel"].at[0, 0].set(-50.0)
  s0 = s0._replace(lrs=lrs)
  s1, _ = learner.observe(s0, b, jnp.int32(0))
  g_w, g_a = first_order_k1_grads(s0.params, s0.lrs, b)
  new_lrs = jax.tree_util.tree_map(lambda a, g: a - 0.2 * g, s0.lrs, g_a)
  assert float(new_lrs["Dense_0"]["kernel"][0, 0]) < 0
  assert float(g_w["Dense_0"]["kernel"][0, 0]) != 0
  assert float(s1.params["Dense_0"]["kernel"][0, 0]) == float(s0.params["Dense_0"]["kernel"][0, 0])
  chex.assert_trees_all_close(
      s1.params, jax.tree_util.tree_map(lambda p, a, g: p - jax.nn.relu(a) * g,
                                        s0.params, new_lrs, g_w), atol=1e-6)


def test_cmaml_keeps_learning_rates():
  learner = make(hparams("cmaml"))
  b = batch(jax.random.PRNGKey(0))
  s = s0 = learner.init(jax.random.PRNGKey(1), b)
  for i in range(3):
    s, _ = learner.observe(s, batch(jax.random.PRNGKey(i)), jnp.int32(0))
  chex.assert_trees_all_equal(s.lrs, s0.lrs)
  assert not np.allclose(s.params["Dense_0"]["kernel"], s0.params["Dense_0"]["kernel"])


def test_global_norm_clip_applies_to_the_weight_step():
  hp = hparams("sync", inner_steps=1, grad_clip_norm=1e-3)
  learner = make(hp)
  b = batch(jax.random.PRNGKey(0))
  s0 = learner.init(jax.random.PRNGKey(1), b)
  s1, _ = learner.observe(s0, b, jnp.int32(0))
  step = jax.tree_util.tree_map(lambda a, b: (a - b) / 0.05, s0.params, s1.params)
  np.testing.assert_allclose(optax.tree.norm(step), 1e-3, rtol=1e-3)


def test_observe_traced_once():
  learner = lamaml.make(hparams("lamaml", glances=2), CONTEXT)
  observe = jax.jit(chex.assert_max_traces(learner.observe, n=1))
  s = learner.init(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(0)))
  for i in range(4):
    s, m = observe(s, batch(jax.random.PRNGKey(i), task=i // 2), jnp.int32(i % 2))
  assert bool(m["finite"])


def test_replay_push_only_on_first_glance_of_first_epoch():
  learner = make(hparams("lamaml", glances=3))
  s = learner.init(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(0)))
  s, _ = learner.observe(s, batch(jax.random.PRNGKey(1)), jnp.int32(0))
  assert int(s.memory.seen) == 4  # once, not once per glance
  s, _ = learner.observe(s, batch(jax.random.PRNGKey(2)), jnp.int32(1))
  assert int(s.memory.seen) == 4  # second epoch: no push
  er = make(hparams("laer", glances=3))
  s = er.init(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(0)))
  s, _ = er.observe(s, batch(jax.random.PRNGKey(1)), jnp.int32(1))
  assert int(s.memory.seen) == 4  # La-ER pushes on every call


def test_glances_after_the_push_replay_the_pushed_samples(monkeypatch):
  """Glance 0 of epoch 0 replays the buffer as it was; later glances see its push."""
  from lamaml_jax import replay  # pylint: disable=g-import-not-at-top
  seen = []
  original = replay.sample_after_write

  def recording(*args):
    out = original(*args)
    jax.debug.callback(lambda w: seen.append((float(w.sum()), None)), out.weight,
                       ordered=True)
    return out

  monkeypatch.setattr(replay, "sample_after_write", recording)
  learner = make(hparams("lamaml", glances=3, replay_batch_size=2))
  s = learner.init(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(0)))
  b = batch(jax.random.PRNGKey(1))._replace(y=jnp.array([0, 1, 2, 0]))
  s, _ = learner.observe(s, b, jnp.int32(0))
  jax.effects_barrier()
  assert seen[0][0] == 0.0  # empty before the push
  assert [w for w, _ in seen[1:]] == [2.0, 2.0]  # two of the four pushed samples
  assert int(s.memory.size) == 4


def test_old_task_memory_snapshot_at_task_switch():
  learner = make(hparams("lamaml", use_old_task_memory=True))
  s = learner.init(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(0)))
  s, _ = learner.observe(s, batch(jax.random.PRNGKey(1), task=0), jnp.int32(0))
  assert int(s.old_memory.size) == 0
  s, _ = learner.observe(s, batch(jax.random.PRNGKey(2), task=1), jnp.int32(0))
  assert int(s.old_memory.size) == 4 and int(s.memory.size) == 6


def test_nan_is_reported():
  learner = make(hparams("lamaml"))
  b = batch(jax.random.PRNGKey(0))
  s = learner.init(jax.random.PRNGKey(0), b)
  _, m = learner.observe(s, b._replace(x=b.x.at[0, 0].set(jnp.nan)), jnp.int32(0))
  assert not bool(m["finite"])


@pytest.mark.parametrize("field,value,pattern", [
    ("alpha_init", -0.1, "alpha_init must be a finite number >= 0, got -0.1"),
    ("alpha_init", float("nan"), "alpha_init must be a finite number >= 0, got nan"),
    ("opt_lr", -1.0, "opt_lr must be a finite number >= 0, got -1.0"),
    ("opt_lr", float("inf"), "opt_lr must be a finite number >= 0, got inf"),
    ("opt_wt", -0.5, "opt_wt must be a finite number >= 0, got -0.5"),
    ("replay_batch_size", 7, "replay_batch_size=7 exceeds memory_size=6"),
    ("glances", 0, "glances must be an integer >= 1, got 0"),
])
def test_invalid_hyperparameters(field, value, pattern):
  with pytest.raises(ValueError, match=pattern):
    hparams("lamaml", **{field: value})


@pytest.mark.parametrize("k", [3, 5])
def test_inner_steps_must_split_the_batch(k):
  learner = make(hparams("lamaml", inner_steps=k))
  with pytest.raises(ValueError, match=f"inner_steps={k} must divide the batch size 4"):
    learner.init(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(0)))


def test_unknown_variant():
  with pytest.raises(ValueError, match="lamaml"):
    lamaml.preset("maml++")


def test_sweep_values_given_to_init_act_like_static_ones():
  """init(alpha_init=, opt_lr=, opt_wt=) under vmap equals separate static runs."""
  b = batch(jax.random.PRNGKey(0))
  values = [(0.05, 0.1, 0.02), (0.2, 0.4, 0.08)]
  batched = lamaml.make(hparams("sync"), CONTEXT)
  sweep = {k: jnp.array([v[i] for v in values]) for i, k in enumerate(lamaml.SWEEPABLE)}
  keys = jnp.stack([jax.random.PRNGKey(1)] * 2)
  # Jitted: op-by-op dispatch of these observes compiles every primitive (slower).
  states = jax.jit(jax.vmap(lambda k, s: batched.init(k, b, **s)))(keys, sweep)
  states, _ = jax.jit(jax.vmap(batched.observe, in_axes=(0, None, None)))(
      states, b, jnp.int32(0))
  for i, (a0, lr, wt) in enumerate(values):
    single = make(hparams("sync", alpha_init=a0, opt_lr=lr, opt_wt=wt))
    s, _ = jax.jit(single.observe)(single.init(jax.random.PRNGKey(1), b), b,
                                   jnp.int32(0))
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], states.params),
                                s.params, atol=1e-6)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], states.lrs),
                                s.lrs, atol=1e-6)
  with pytest.raises(ValueError, match="Cannot sweep"):
    batched.init(jax.random.PRNGKey(0), b, glances=3)


@pytest.mark.parametrize("method", ["lamaml", "sync", "cmaml"])
def test_mlp_fast_path_is_used_and_matches_the_generic_path(method, monkeypatch):
  """Single-sample inner slices on an MLP go through `mlp_lookahead`; the states
  after a few observes (replay filling, several glances) equal the generic path's."""
  from lamaml_jax import mlp_lookahead  # pylint: disable=g-import-not-at-top
  calls = []
  original = mlp_lookahead.meta_gradients
  monkeypatch.setattr(mlp_lookahead, "meta_gradients",
                      lambda *a, **kw: calls.append(1) or original(*a, **kw))
  states = []
  for fast in (True, False):
    calls.clear()
    hp = hparams(method, inner_steps=4, glances=2, relu_inner_lrs=True,
                 grad_clip_norm=2.0, mlp_fast_path=fast)
    learner = make(hp)
    state = learner.init(jax.random.PRNGKey(1), batch(jax.random.PRNGKey(0)))
    for i in range(3):
      state, _ = learner.observe(state, batch(jax.random.PRNGKey(10 + i)), jnp.int32(0))
    states.append(state)
    assert bool(calls) == fast
  chex.assert_trees_all_close(states[0].params, states[1].params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(states[0].lrs, states[1].lrs, rtol=1e-5, atol=1e-6)


def unoptimised_jit(fn, *args):
  """`fn` compiled for `args` without LLVM's optimisations: a third of the compile
  time of these float64 programs; the arithmetic is the same up to rounding."""
  return jax.jit(fn).lower(*args).compile(compiler_options={
      "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})


# Second order with remat, the most demanding path (suite time: the float64
# compilations take half a minute unoptimised): the rematerialised unroll is the autodiff
# path plus `jax.checkpoint`. test_lookahead holds first order's accumulation and
# second order's reverse pass equal to the plain unroll.
@pytest.mark.parametrize("first_order, remat", [(False, True)])
def test_autodiff_and_fast_hypergradients_give_the_same_observe_on_the_cifar_net(
    first_order, remat):
  """Two observes (5 slices of 2, clamp, replay) of La-MAML on the CIFAR net's
  architecture (3 strided convs, 2 hidden layers; narrower and on 8x8 images,
  for test time) with
  `jax.grad` through the unroll (optionally rematerialised) and with the fast
  implementations: the same weights and learning rates in float64."""
  with jax.enable_x64(True):
    net = networks.ConvNet(num_convs=3, channels=8, hidden=(16, 16), num_outputs=10,
                           conv_impl="xla")
    context = base.BuildContext(network=net, num_outputs=10, classes_per_task=5,
                                num_tasks=2, samples_per_task=20, batch_size=10,
                                epochs=1, steps_per_task=2, input_shape=(8, 8, 3))
    rng = np.random.default_rng(0)
    stream = Batch(x=jnp.asarray(rng.normal(size=(10, 8, 8, 3))),
                   y=jnp.asarray(rng.integers(5, 10, 10), jnp.int32),
                   task=jnp.ones((10,), jnp.int32), weight=jnp.ones((10,)))
    states = {}
    for impl in ("fast", "autodiff"):
      hp = hparams("lamaml", inner_steps=2, glances=1, first_order=first_order,
                   inner_grad_clamp=1.0, grad_clip_norm=1.0, replay_batch_size=4,
                   memory_size=10, alpha_init=0.15, hypergrad_impl=impl,
                   remat_inner_steps=remat and impl == "autodiff", scan_unroll=1)
      learner = lamaml.make(hp, context)
      state = unoptimised_jit(learner.init, jax.random.PRNGKey(0), stream)(
          jax.random.PRNGKey(0), stream)
      # The step sizes are float64 values of the hyperparameters, not float32's.
      assert state.lrs["Conv_0"]["kernel"].dtype == jnp.float64
      assert float(state.lrs["Conv_0"]["kernel"][0, 0, 0, 0]) == 0.15
      assert state.lr_opt_state.hyperparams["learning_rate"].dtype == jnp.float64
      observe = unoptimised_jit(learner.observe, state, stream, jnp.int32(0))
      # Compiled once: the second call also checks that observe keeps the state's
      # dtypes in x64 mode (a drifting counter would be refused here).
      state, _ = observe(state, stream, jnp.int32(0))  # fills the replay buffer
      state, _ = observe(state, stream._replace(y=stream.y[::-1]), jnp.int32(0))
      states[impl] = state
    chex.assert_trees_all_close(states["fast"].params, states["autodiff"].params,
                                rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(states["fast"].lrs, states["autodiff"].lrs,
                                rtol=1e-10, atol=1e-12)
    moved = jax.tree_util.tree_map(lambda a: float(jnp.max(jnp.abs(a - 0.15))),
                                   states["fast"].lrs)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-6  # the learning rates learnt


@pytest.mark.parametrize("field, value, pattern", [
    ("hypergrad_impl", "numeric", "hypergrad_impl must be 'fast' or 'autodiff'"),
    ("remat_inner_steps", True, "applies to hypergrad_impl='autodiff' only")])
def test_invalid_hypergradient_settings(field, value, pattern):
  with pytest.raises(ValueError, match=pattern):
    hparams("lamaml", **{field: value})
