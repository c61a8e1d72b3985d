"""iCaRL: herding, the exemplar store, nearest-mean prediction and distillation
against hand derivations and NumPy; the learner's steps, task ends and options."""
import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from lamaml_jax import exemplars, networks
from lamaml_jax.learners import base, icarl
from lamaml_jax.types import Batch
from learner_util import jit_once

T, CPT, DIM, B, N = 3, 2, 5, 4, 12  # 3 tasks of 2 classes, 12 samples (6 a class)
OUT = T * CPT
NET = networks.MLP(hidden=(8,), num_outputs=OUT)
# The defaults, and the official options (fewer compilations than one at a time).
VARIANTS = {"penultimate": {}, "logits": {"features": "logits", "unseen_task": "uniform",
                                          "shrink_m_to_smallest_class": True}}
FAST_COMPILE = {"xla_backend_optimization_level": 0,
                "xla_llvm_disable_expensive_passes": True}


def context(cpt=CPT):
  return base.BuildContext(network=NET, num_outputs=OUT, classes_per_task=cpt,
                           num_tasks=T, samples_per_task=N, batch_size=B, epochs=1,
                           steps_per_task=N // B, input_shape=(DIM,))


def fast_jit(fn, **kwargs):
  return jax.jit(fn, compiler_options=FAST_COMPILE, **kwargs)


LR, K, CLIP, LAMBDA = 0.1, 10, 0.3, 2.0


class Built(NamedTuple):
  learner: base.Learner
  init: Callable  # (batch) -> state
  observe: Callable
  end_task: Callable
  predict: Callable


def net(params, x, features=False):
  """NET's outputs (or penultimate features), compiled."""
  return _net(params, x, features)


_net = fast_jit(lambda params, x, features: NET.apply({"params": params}, x,
                                                      features=features),
                static_argnums=2)


@functools.lru_cache(maxsize=None)
def build(**overrides) -> Built:
  """The learner for test hyperparameters and its functions compiled (observe
  failing if traced twice)."""
  hp = icarl.ICaRLHparams(**{"lr": LR, "memory_size": K, "grad_clip_norm": CLIP,
                             "memory_strength": LAMBDA, "feature_chunk_size": 5,
                             **overrides})
  learner = icarl.make(hp, context())
  init = fast_jit(learner.init)
  return Built(learner, lambda batch: init(jax.random.PRNGKey(0), batch),
               jit_once(learner.observe, compiler_options=FAST_COMPILE),
               fast_jit(learner.end_task), fast_jit(learner.predict))


def task_data(seed, task, per_class=(6, 6)):
  """x [n, DIM], y [n] labels of `task`'s classes, per_class samples of each."""
  rng = np.random.default_rng(seed)
  y = np.concatenate([np.full(k, task * CPT + c) for c, k in enumerate(per_class)])
  y = rng.permutation(y)
  x = rng.normal(size=(len(y), DIM)) + y[:, None] * 0.3
  return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


def as_batch(x, y, task):
  n = len(y)
  return Batch(x=jnp.asarray(x), y=jnp.asarray(y), task=jnp.full((n,), task, jnp.int32),
               weight=jnp.ones((n,), jnp.float32))


def np_features(params, x, kind):
  if kind == "penultimate":
    f = np.asarray(net(params, x, features=True), np.float64)
    return f / np.linalg.norm(f, axis=1, keepdims=True)
  return np.asarray(net(params, x), np.float64)


def np_herd(features, m):
  """Herding by the definition, in float64: the ordered rows picked."""
  mu, chosen = features.mean(0), []
  for k in range(min(m, len(features))):
    total = features[chosen].sum(0)
    cost = [np.inf if i in chosen else np.linalg.norm(mu - (features[i] + total) / (k + 1))
            for i in range(len(features))]
    chosen.append(int(np.argmin(cost)))
  return chosen


def herd(features, candidates, m, max_picks):
  picks, picked = fast_jit(exemplars.herd, static_argnums=3)(
      jnp.asarray(features, jnp.float32), jnp.asarray(candidates), jnp.int32(m),
      max_picks)
  return np.asarray(picks), np.asarray(picked)


# --- herding -------------------------------------------------------------------


def test_herding_symmetric_set_picks_antipodal_pairs():
  """{±a, ±b, ±c}, |a| < |b| < |c|, mean 0: pick 1 is one of ±a (the smallest
  norm); its antipode then brings the running mean back to 0 exactly, and so on."""
  a, b, c = np.array([0.3, 0.4]), np.array([-1.0, 0.5]), np.array([1.5, 2.0])
  points = np.stack([c, -b, a, -c, b, -a])  # indices: c 0, -c 3, b 4, -b 1, a 2, -a 5
  picks, picked = herd(points, np.ones(6, bool), 6, 6)
  assert picked.all()
  pairs = [set(picks[i:i + 2]) for i in (0, 2, 4)]
  assert pairs == [{2, 5}, {1, 4}, {0, 3}]


def test_herding_hand_derived_sequence_with_mask_and_bound():
  """1-D candidates −2, −1, 1, 2, 0.25 (mean 0.05), non-candidates 100 and 0.05:
  0.25 first (nearest the mean), then v nearest −0.15 (−1), then 0.9 (1), then
  −0.05 (−2 before 2), then 2."""
  values = np.array([[100.0], [-2.0], [-1.0], [1.0], [2.0], [0.25], [0.05]])
  candidates = np.array([0, 1, 1, 1, 1, 1, 0], bool)
  picks, picked = herd(values, candidates, 5, 7)
  np.testing.assert_array_equal(picks[:5], [5, 2, 3, 1, 4])
  np.testing.assert_array_equal(picked, [1, 1, 1, 1, 1, 0, 0])
  picks, picked = herd(values, candidates, 3, 7)  # m bounds the picks
  np.testing.assert_array_equal(picks[:3], [5, 2, 3])
  np.testing.assert_array_equal(picked, [1, 1, 1, 0, 0, 0, 0])
  _, picked = herd(values, candidates, 7, 7)  # more wanted than candidates
  np.testing.assert_array_equal(picked, [1, 1, 1, 1, 1, 0, 0])


@pytest.mark.parametrize("seed", range(4))
def test_herding_is_greedy(seed):
  """Every pick k minimises ‖μ − (φ_i + Σ earlier picks) / k‖ over every unused
  candidate i, given the earlier picks (float64, all alternatives checked)."""
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(9, 3))
  candidates = rng.permutation(np.arange(9) < 7)
  picks, picked = herd(features, candidates, 7, 8)
  assert picked.tolist() == [True] * 7 + [False]
  mu = features[candidates].mean(0)
  for k in range(7):
    earlier = features[picks[:k]].sum(0)
    cost = {i: np.linalg.norm(mu - (features[i] + earlier) / (k + 1))
            for i in np.flatnonzero(candidates) if i not in picks[:k]}
    assert picks[k] in cost
    assert cost[picks[k]] <= min(cost.values()) + 1e-6
  assert sorted(picks[:7]) == sorted(np.flatnonzero(candidates))


# --- store and nearest mean ---------------------------------------------------


def filled_store(k=12, classes=3, counts=(4, 2, 3), seed=0):
  """A store with `classes` groups at stride k // classes, class c holding
  counts[c] rows of x = (100 c + r) (so rows name themselves)."""
  store = exemplars.init(k, (2,))
  m = k // classes
  store = store._replace(per_class=jnp.int32(m))
  x = jnp.asarray([[100.0 * c + r, -(100.0 * c + r)] for c in range(classes)
                   for r in range(m)])
  picks = jnp.arange(classes * m).reshape(classes, m)
  picked = jnp.arange(m)[None, :] < jnp.asarray(counts)[:, None]
  return fast_jit(exemplars.add_classes)(store, x, jnp.arange(classes) + 10, picks,
                                         picked)


def test_add_classes_and_repack_keep_each_class_first_exemplars():
  store = filled_store()
  assert int(store.num_classes) == 3
  np.testing.assert_array_equal(store.valid, [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0])
  np.testing.assert_array_equal(store.x[store.valid][:, 0],
                                [0, 1, 2, 3, 100, 101, 200, 201, 202])
  np.testing.assert_array_equal(fast_jit(exemplars.group_counts, static_argnums=1)(
      store, 4), [4, 2, 3, 0])
  repack = fast_jit(exemplars.repack)
  # Two more classes: stride 12 // 5 = 2, each old class keeps its first 2.
  packed = repack(store, jnp.int32(2))
  np.testing.assert_array_equal(packed.valid, [1] * 6 + [0] * 6)
  np.testing.assert_array_equal(packed.x[:6, 0], [0, 1, 100, 101, 200, 201])
  np.testing.assert_array_equal(packed.y[:6], [10, 10, 11, 11, 12, 12])
  assert int(packed.num_classes) == 3 and int(packed.per_class) == 2
  one = repack(store, jnp.int32(2), keep=jnp.int32(1))
  np.testing.assert_array_equal(one.valid, [1, 0, 1, 0, 1, 0] + [0] * 6)
  assert not repack(store, jnp.int32(0)).valid.any()  # K < classes


def test_sample_per_group_draws_each_group_uniformly():
  store = filled_store()
  draw = fast_jit(jax.vmap(lambda key: exemplars.sample_per_group(store, key, 4)))
  slots, ok = draw(jax.random.split(jax.random.PRNGKey(0), 300))
  slots, ok = np.asarray(slots), np.asarray(ok[0])
  np.testing.assert_array_equal(ok, [1, 1, 1, 0])
  for g, count in enumerate((4, 2, 3)):
    values, freq = np.unique(slots[:, g], return_counts=True)
    np.testing.assert_array_equal(values, 4 * g + np.arange(count))
    assert freq.min() > 300 / count * 0.6


@pytest.mark.parametrize("renormalize", [False, True])
def test_nearest_mean_scores_equal_numpy(renormalize):
  rng = np.random.default_rng(0)
  store = filled_store()
  feats = rng.normal(size=(12, 3))
  query = rng.normal(size=(5, 3))
  allowed = np.zeros(14, bool)
  allowed[[10, 12, 13]] = True  # 13 has no exemplars

  @fast_jit
  def nme(feats, query):
    means, has = exemplars.class_means(feats, store, 14, renormalize)
    return exemplars.nearest_mean_scores(query, means, jnp.asarray(allowed) & has), has

  scores, has = nme(jnp.asarray(feats, jnp.float32), jnp.asarray(query, jnp.float32))
  valid, y = np.asarray(store.valid), np.asarray(store.y)
  want = np.full((5, 14), -np.inf)
  for c in (10, 12):
    mu = feats[valid & (y == c)].mean(0)
    mu = mu / np.linalg.norm(mu) if renormalize else mu
    want[:, c] = -np.linalg.norm(query - mu, axis=1)
  np.testing.assert_array_equal(np.asarray(has).nonzero()[0], [10, 11, 12])
  np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)


# --- distillation --------------------------------------------------------------


def np_distill(logits, targets, task, weight):
  """Official: Σ_τ KLDivLoss()(log_softmax(f[τ]), softmax(z[τ])) · C, where
  KLDivLoss() averages p (log p − log q) over the C × C elements of a task."""
  total = 0.0
  for tau in np.unique(task[weight > 0]):
    rows = (task == tau) & (weight > 0)
    s = logits[rows][:, CPT * tau:CPT * tau + CPT]
    z = targets[rows][:, CPT * tau:CPT * tau + CPT]
    log_q = s - np.log(np.exp(s).sum(1, keepdims=True))
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    total += np.sum(np.exp(log_p) * (log_p - log_q)) / (CPT * CPT) * CPT
  return total


def test_distillation_value_zero_at_targets_and_gradient_matches_finite_differences():
  rng = np.random.default_rng(0)
  task = np.array([0, 0, 1, 1, 0])
  weight = np.array([1.0, 1.0, 1.0, 1.0, 0.0])  # the last row: nothing drawn
  logits, targets = rng.normal(size=(5, OUT)), rng.normal(size=(5, OUT))
  with jax.enable_x64(True):
    loss_fn = lambda f, z: icarl.distillation_loss(f, z, jnp.asarray(task),
                                                   jnp.asarray(weight), CPT)
    loss, grad_f, grad_z = (fast_jit(loss_fn), fast_jit(jax.grad(loss_fn)),
                            fast_jit(jax.grad(loss_fn, argnums=1)))
    f, z = jnp.asarray(logits), jnp.asarray(targets)
    np.testing.assert_allclose(loss(f, z), np_distill(logits, targets, task, weight),
                               rtol=1e-12)
    assert float(loss(z, z)) == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(grad_f(z, z), 0.0, atol=1e-15)
    grad = np.asarray(grad_f(f, z))
    eps, fd = 1e-6, np.zeros_like(logits)
    for i, j in np.ndindex(*logits.shape):
      d = np.zeros_like(logits)
      d[i, j] = eps
      fd[i, j] = (loss(f + d, z) - loss(f - d, z)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, atol=1e-8)
    assert np.abs(grad[:4]).max() > 1e-2 and not np.any(grad[4])
    assert not np.any(grad[[0, 1, 4]][:, 2:]) and not np.any(grad[[2, 3]][:, [0, 1, 4, 5]])
    assert not np.any(grad_z(f, z))  # targets are constants


# --- the learner ---------------------------------------------------------------


def perturb(params, seed, scale):
  """params + scale · N(0, 1) noise (NumPy draws: no PRNG programs to compile)."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda p: p + jnp.asarray(scale * rng.normal(size=p.shape), p.dtype), params)


def flat(tree):
  return np.asarray(ravel_pytree(tree)[0], np.float64)


@functools.partial(jax.jit, static_argnums=3)
def hand_ce(params, x, y, task):
  """Mean CE of (x, y) on head `task`, by slicing the logits."""
  logits = NET.apply({"params": params}, x)[:, task * CPT:(task + 1) * CPT]
  return jnp.mean(jax.nn.logsumexp(logits, 1) - logits[jnp.arange(len(y)), y - task * CPT])


def clipped(g):
  return g * min(1.0, CLIP / np.linalg.norm(g))


def test_first_task_step_is_plain_sgd_and_observe_traces_once():
  """No exemplars on task 0: the step is lr · clip(∇CE) on the task's head,
  'distill' is 0. One compilation serves every task and task end, which keep the
  state's shapes (later tasks' distillation:
  `test_distillation_step_matches_hand_gradient`)."""
  learner, init, observe, end_task, _ = build()
  x, y = task_data(0, 0)
  state = init(as_batch(x[:B], y[:B], 0))
  shapes = jax.tree_util.tree_map(jnp.shape, state)
  batch = as_batch(x[:B], y[:B], 0)
  new_state, metrics = observe(state, batch, jnp.int32(0))
  g = flat(jax.jit(jax.grad(hand_ce), static_argnums=3)(state.params, batch.x,
                                                         batch.y, 0))
  assert np.linalg.norm(g) > CLIP
  np.testing.assert_allclose(flat(new_state.params), flat(state.params) - LR * clipped(g),
                             atol=1e-6)
  assert float(metrics["distill"]) == 0.0 and bool(metrics["finite"])
  np.testing.assert_allclose(metrics["loss"], hand_ce(state.params, batch.x, batch.y, 0),
                             rtol=1e-5)
  state = end_task(new_state, x, y, jnp.int32(0))
  for task in (1, 2):
    xt, yt = task_data(task, task)
    for _ in range(2):
      state, metrics = observe(state, as_batch(xt[:B], yt[:B], task), jnp.int32(0))
    assert bool(metrics["finite"])
    state = end_task(state, xt, yt, jnp.int32(task))
  assert jax.tree_util.tree_map(jnp.shape, state) == shapes
  summary = learner.summary(state)
  assert (int(summary["sgd_steps"]), int(summary["exemplars"]),
          int(summary["exemplars_per_class"])) == (5, 6, 1)


@pytest.mark.parametrize("features", icarl.FEATURES)
def test_end_task_herds_m_per_class_over_three_tasks(features):
  """K = 10: m = 10 // 2 = 5, then 10 // 4 = 2, then 10 // 6 = 1. Each new class
  holds NumPy's herding of its samples' features (normalised penultimate ones, or
  the task's 2 logits) in slots [g m, g m + m); old classes keep the first m of
  their herding order; the targets are the network's logits of the exemplars."""
  _, init, _, end_task, _ = build(**VARIANTS[features])
  state, order = None, {}
  for task, m in zip(range(3), (5, 2, 1)):
    x, y = task_data(task, task)
    if state is None:
      state = init(as_batch(x[:B], y[:B], 0))
    # Different weights at every task end (herding uses the current network);
    # hidden biases of 1 keep the ReLUs alive (no all-zero penultimate features).
    params = perturb(state.params, task, 0.3)
    params["Dense_0"]["bias"] = params["Dense_0"]["bias"] + 1.0
    state = end_task(state._replace(params=params), x, y, jnp.int32(task))
    feats = np_features(params, x, features)
    if features == "logits":
      feats = feats[:, task * CPT:(task + 1) * CPT]
    for c in range(task * CPT, (task + 1) * CPT):
      rows = np.flatnonzero(np.asarray(y) == c)
      order[c] = [np.asarray(x[rows[i]]) for i in np_herd(feats[rows], 5)]
    mem = state.memory
    assert int(mem.per_class) == m and int(mem.num_classes) == (task + 1) * CPT
    for c in range((task + 1) * CPT):
      np.testing.assert_array_equal(mem.valid[c * m:(c + 1) * m], True)
      np.testing.assert_array_equal(mem.y[c * m:(c + 1) * m], c)
      np.testing.assert_allclose(mem.x[c * m:(c + 1) * m], np.stack(order[c][:m]))
    assert int(mem.valid.sum()) == (task + 1) * CPT * m
    logits = net(params, mem.x)
    np.testing.assert_allclose(state.targets, np.where(mem.valid[:, None], logits, 0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shrink", [False, True])
def test_class_short_of_m_candidates(shrink):
  """Task 0's class 1 has 3 samples (class 0 9), m = 5: it keeps 3 and class 0 5, or
  (official shrink, with the official options) every class keeps 3; the next
  task's m = 2 cuts both to 2."""
  _, init, _, end_task, _ = build(**VARIANTS["logits" if shrink else "penultimate"])
  x, y = task_data(0, 0, per_class=(9, 3))
  state = init(as_batch(x[:B], y[:B], 0))
  state = end_task(state, x, y, jnp.int32(0))
  counts = exemplars.group_counts(state.memory, 2)
  np.testing.assert_array_equal(counts, [3, 3] if shrink else [5, 3])
  x1, y1 = task_data(1, 1)
  state = end_task(state, x1, y1, jnp.int32(1))
  np.testing.assert_array_equal(exemplars.group_counts(state.memory, 4), [2, 2, 2, 2])


@pytest.mark.parametrize("features", icarl.FEATURES)
def test_predict_is_nearest_mean_of_exemplars_masked_to_the_task(features):
  _, init, _, end_task, predict = build(**VARIANTS[features])
  unseen = VARIANTS[features].get("unseen_task", "network")
  state = None
  for task in (0, 1):
    x, y = task_data(task, task)
    if state is None:
      state = init(as_batch(x[:B], y[:B], 0))
    state = end_task(state, x, y, jnp.int32(task))
  # Weights moved since the task end: the means use the current network.
  state = state._replace(params=jax.tree_util.tree_map(
      lambda p: p * 1.1 + 0.05, state.params))
  query = jnp.asarray(np.random.default_rng(5).normal(size=(7, DIM)), jnp.float32)
  valid, labels = np.asarray(state.memory.valid), np.asarray(state.memory.y)
  ex = np_features(state.params, state.memory.x, features)
  q = np_features(state.params, query, features)
  for task in (0, 1):
    scores = np.asarray(predict(state, query, jnp.int32(task)))
    want = np.full((7, OUT), -np.inf)
    for c in range(task * CPT, (task + 1) * CPT):
      mu = ex[valid & (labels == c)].mean(0)
      if features == "penultimate":
        mu = mu / np.linalg.norm(mu)
      want[:, c] = -np.linalg.norm(q - mu, axis=1)
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(scores.argmax(1), want.argmax(1))
  unseen_scores = np.asarray(predict(state, query, jnp.int32(2)))  # no exemplars
  if unseen == "uniform":
    want = np.where(np.arange(OUT) // CPT == 2, 1 / CPT, -np.inf)
    np.testing.assert_array_equal(unseen_scores, np.broadcast_to(want, (7, OUT)))
  else:
    logits = np.asarray(net(state.params, query))
    np.testing.assert_allclose(unseen_scores[:, 4:], logits[:, 4:], rtol=1e-5)
    assert np.all(np.isneginf(unseen_scores[:, :4]))


def test_distillation_buckets_forward_only_past_tasks_with_the_same_update():
  """5 tasks (8 class groups): at task 2 the bucketed learner forwards the 4
  groups of tasks 0-1 where the other forwards all 8; same draw, same step."""
  ctx = dataclasses.replace(context(), num_tasks=5)
  assert icarl.distillation_buckets(8, CPT, True) == [2, 4, 6, 8]
  out = []
  for buckets in (True, False):
    hp = icarl.ICaRLHparams(lr=LR, memory_size=K, grad_clip_norm=CLIP,
                            memory_strength=LAMBDA, distill_buckets=buckets)
    learner = icarl.make(hp, ctx)
    x0, y0 = task_data(0, 0)
    state = fast_jit(learner.init)(jax.random.PRNGKey(0), as_batch(x0[:B], y0[:B], 0))
    for task in (0, 1):
      x, y = task_data(task, task)
      state = fast_jit(learner.end_task)(state, x, y, jnp.int32(task))
    state = state._replace(params=perturb(state.params, 3, 0.2))
    x2, y2 = task_data(2, 2)
    out.append(fast_jit(learner.observe)(state, as_batch(x2[:B], y2[:B], 2),
                                         jnp.int32(0)))
  (bucketed, m1), (full, m2) = out
  np.testing.assert_allclose(flat(bucketed.params), flat(full.params), atol=1e-6)
  assert float(m1["distill"]) > 1e-3
  np.testing.assert_allclose(m1["distill"], m2["distill"], rtol=1e-5)


def test_distillation_step_matches_hand_gradient():
  """Each class of tasks 0 and 1 has 6 copies of one sample, so each exemplar
  draw gives that sample and its target whatever the slot. At task 2, θ' = θ − lr · clip(∇(CE + λ · ½ Σ_c KL_c))
  with z_c the logits of the task-end network, over the 4 classes of the 2 past
  tasks. Right after a task end (the network reproduces z), the term is 0."""
  _, init, observe, end_task, _ = build()
  for task in (0, 1):
    x, y = task_data(task, task)
    first = {int(c): x[int(np.argmax(np.asarray(y) == c))] for c in np.unique(y)}
    x = jnp.stack([first[int(c)] for c in y])
    if task == 0:
      state = init(as_batch(x[:B], y[:B], 0))
    state = end_task(state, x, y, jnp.int32(task))
  x2, y2 = task_data(2, 2)
  batch = as_batch(x2[:B], y2[:B], 2)
  _, metrics = observe(state, batch, jnp.int32(0))
  assert abs(float(metrics["distill"])) < 1e-6
  end_params = state.params
  np.testing.assert_array_equal(state.memory.valid, [1] * 8 + [0] * 2)  # m = 2
  np.testing.assert_array_equal(state.memory.y[:8], [0, 0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(state.memory.x[0:8:2], state.memory.x[1:8:2])
  mem_x = state.memory.x[0:8:2]
  z = net(end_params, mem_x)
  params = perturb(end_params, 3, 0.2)
  state = state._replace(params=params)

  def hand_loss(p):
    f = NET.apply({"params": p}, mem_x)
    kl = 0.0
    for c in range(4):
      tau = c // CPT
      log_p = jax.nn.log_softmax(z[c, tau * CPT:(tau + 1) * CPT])
      log_q = jax.nn.log_softmax(f[c, tau * CPT:(tau + 1) * CPT])
      kl += jnp.sum(jnp.exp(log_p) * (log_p - log_q))
    return hand_ce(p, batch.x, batch.y, 2) + LAMBDA * kl / CPT, kl / CPT

  (loss, distill), grads = jax.jit(jax.value_and_grad(hand_loss, has_aux=True))(params)
  g = flat(grads)
  assert np.linalg.norm(g) > CLIP
  new_state, metrics = observe(state, batch, jnp.int32(0))
  np.testing.assert_allclose(flat(new_state.params), flat(params) - LR * clipped(g),
                             atol=1e-6)
  np.testing.assert_allclose(metrics["distill"], distill, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  assert float(distill) > 1e-3


def test_stream_store_holds_the_first_pass_minus_its_last_batch():
  """herd_on='stream', N = 12, B = 4: of the first pass's 3 batches the first 2
  are stored (the third brings the count to N), the second pass adds nothing;
  the exemplars come from those 8 rows and the store empties at the task end."""
  _, init, observe, end_task, _ = build(herd_on="stream")
  x, y = task_data(0, 0)
  state = init(as_batch(x[:B], y[:B], 0))
  assert state.stream.x.shape == (N, DIM)
  for epoch in (0, 1):
    for i in range(N // B):
      rows = np.roll(np.arange(N), -4 * epoch)[i * B:(i + 1) * B]
      state, _ = observe(state, as_batch(x[rows], y[rows], 0), jnp.int32(epoch))
  assert int(state.stream.count) == 8 and int(state.seen) == 24
  np.testing.assert_array_equal(state.stream.x[:8], x[:8])
  state = end_task(state, x, y, jnp.int32(0))
  stored = {tuple(np.asarray(r)) for r in x[:8]}
  mem = state.memory
  chosen = [tuple(np.asarray(r)) for r in mem.x[mem.valid]]
  counts = [int(np.sum(np.asarray(y[:8]) == c)) for c in (0, 1)]
  assert len(chosen) == sum(min(5, k) for k in counts) and set(chosen) <= stored
  assert int(state.stream.count) == 0 and int(state.seen) == 0


def test_method_registration_and_context_errors():
  method = icarl.METHODS["icarl"]
  assert method.sweepable == ("lr",)
  assert method.memory_samples(icarl.ICaRLHparams(memory_size=321), context()) == 321
  with pytest.raises(ValueError, match="iCaRL needs task-incremental heads"):
    icarl.make(icarl.ICaRLHparams(), context(cpt=None))
  with pytest.raises(ValueError, match="memory_size=1 is below"):
    icarl.make(icarl.ICaRLHparams(memory_size=1), context())


@pytest.mark.parametrize("field,value", [
    ("features", "raw"), ("herd_on", "buffer"), ("unseen_task", "zero"),
    ("shrink_m_to_smallest_class", 1), ("memory_size", 0), ("memory_strength", -1.0),
    ("feature_chunk_size", 0), ("lr", float("nan")), ("glances", 0)])
def test_invalid_hparams_name_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    icarl.ICaRLHparams(**{field: value})
