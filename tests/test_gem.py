"""GEM and the per-task episodic memory: steps against hand computations.

Gradients are recomputed here with jax.grad of a hand-written loss (heads by
slicing the logits, not masking them), clipped in numpy, and GEM's dual is solved
with quadprog as the official code does. test_agem reuses these helpers.
"""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import quadprog
from jax.flatten_util import ravel_pytree

from lamaml_jax import episodic_memory, networks
from lamaml_jax.learners import base, gem
from lamaml_jax.types import Batch

T, N_MEM, B, DIM, CPT = 3, 6, 4, 5, 2
OUT = T * CPT  # 3 tasks x 2 classes
NET = networks.MLP(hidden=(8,), num_outputs=OUT)
LR, CLIP = 0.1, 0.05  # the clip is active for every gradient of these tests
# Tests compile many small programs: spend less time optimising them.
FAST_COMPILE = {"xla_backend_optimization_level": 0,
                "xla_llvm_disable_expensive_passes": True}


def context(cpt=CPT):
  return base.BuildContext(network=NET, num_outputs=OUT, classes_per_task=cpt,
                           num_tasks=T, samples_per_task=20, batch_size=B, epochs=1,
                           steps_per_task=5, input_shape=(DIM,))


def build(**overrides):
  """(learner, jitted observe) for GEMHparams with test defaults and overrides."""
  return jit_learner(gem.make, gem.GEMHparams(
      **{"lr": LR, "n_memories": N_MEM, "grad_clip_norm": CLIP, "memory_strength": 0.5,
         **overrides}))


@functools.lru_cache(maxsize=None)
def jit_learner(make, hp):
  learner = make(hp, context())
  return learner, jax.jit(learner.observe, compiler_options=FAST_COMPILE)


def make_batch(rng, task, m=B):
  return Batch(x=jnp.asarray(rng.normal(size=(m, DIM)), jnp.float32),
               y=jnp.asarray(task * CPT + rng.integers(0, CPT, m), jnp.int32),
               task=jnp.full((m,), task, jnp.int32), weight=jnp.ones((m,), jnp.float32))


def memory_with(rows):
  """EpisodicMemory whose task k holds rows[k] = (x [m, DIM], y [m]) in rows 0..m-1."""
  x = np.zeros((T, N_MEM, DIM), np.float32)
  y = np.zeros((T, N_MEM), np.int32)
  valid = np.zeros((T, N_MEM), bool)
  for k, (xk, yk) in rows.items():
    x[k, :len(yk)], y[k, :len(yk)], valid[k, :len(yk)] = xk, yk, True
  return episodic_memory.EpisodicMemory(
      x=jnp.asarray(x), y=jnp.asarray(y), valid=jnp.asarray(valid),
      pointer=jnp.asarray(valid.sum(1) % N_MEM, jnp.int32))


@functools.partial(jax.jit, static_argnums=3, compiler_options=FAST_COMPILE)
def _hand_grad(params, x, y, task):
  def loss(p):
    logits = NET.apply({"params": p}, x)[:, task * CPT:(task + 1) * CPT]
    return jnp.mean(jax.nn.logsumexp(logits, -1)
                    - logits[jnp.arange(len(y)), y - task * CPT])
  return ravel_pytree(jax.grad(loss)(params))[0]


def hand_grad(params, x, y, task):
  """Flat ∇ of the mean CE of (x, y) on head `task`, by slicing the logits."""
  return np.asarray(_hand_grad(params, jnp.asarray(x), jnp.asarray(y), int(task)),
                    np.float64)


def clip(g, norm=CLIP):
  return g if norm is None else g * min(1.0, norm / np.linalg.norm(g))


def memory_grads(params, rows, clip_norm=None):
  """[len(rows), P]: each task's (clipped) memory gradient."""
  return np.stack([clip(hand_grad(params, *rows[k], k), clip_norm) for k in rows])


def cosines(G, g):
  return G @ g / np.linalg.norm(G, axis=1) / np.linalg.norm(g)


def flat(params):
  return np.asarray(ravel_pytree(params)[0], np.float64)


def quadprog_project(G, g, margin, epsilon):
  """Official GEM: v = quadprog(P, −Gg, I, margin) minimises ½vᵀPv + (Gg)ᵀv."""
  k = G.shape[0]
  P = G @ G.T
  P = 0.5 * (P + P.T) + epsilon * np.eye(k)
  v = quadprog.solve_qp(P, -(G @ g), np.eye(k), margin * np.ones(k))[0]
  return G.T @ v + g


def init_state(rng):
  return build()[0].init(jax.random.PRNGKey(0), make_batch(rng, 0))


def find_problem(condition, past=(0, 1), current=2, sizes=(N_MEM, N_MEM), seed=0,
                 valid=B):
  """Searches seeds for random memories of `past` (`sizes` rows), a batch of
  `current` (its first `valid` samples with weight 1, the others 0) and g = its
  clipped hand gradient with condition(params, rows, g, batch).

  Returns (state holding those memories, batch, rows, g)."""
  for s in range(seed, seed + 100):
    rng = np.random.default_rng(s)
    state = init_state(rng)
    rows = {k: (rng.normal(size=(m, DIM)).astype(np.float32),
                k * CPT + rng.integers(0, CPT, m)) for k, m in zip(past, sizes)}
    batch = make_batch(rng, current)
    batch = batch._replace(weight=(jnp.arange(B) < valid).astype(jnp.float32))
    g = clip(hand_grad(state.params, batch.x[:valid], batch.y[:valid], current))
    if condition(state.params, rows, g, batch):
      return state._replace(memory=memory_with(rows)), batch, rows, g
  raise AssertionError("no problem satisfies the condition")


def some_conflict(params, rows, g, _):
  return np.any(cosines(memory_grads(params, rows), g) < -0.1)


def observed_step(observe, state, batch, lr=LR):
  """(g̃ = (θ − θ') / lr, metrics) of one observe call."""
  new_state, metrics = observe(state, batch, jnp.int32(0))
  return (flat(state.params) - flat(new_state.params)) / lr, metrics


def assert_step(observe, state, batch, expected, projected):
  """The weights moved by −lr · expected (to float32 rounding of the weights)."""
  new_state, metrics = observe(state, batch, jnp.int32(0))
  np.testing.assert_allclose(flat(new_state.params), flat(state.params) - LR * expected,
                             atol=1e-6)
  assert float(metrics["projected"]) == projected
  return new_state, metrics


# --- episodic memory ---------------------------------------------------------


def simulate_writes(writes, shared):
  """The official ring buffer, by hand: writes [(task, [ids])] -> rows, pointers."""
  rows = [[None] * N_MEM for _ in range(T)]
  pointers, shared_pointer = [0] * T, 0
  for task, ids in writes:
    p = shared_pointer if shared else pointers[task]
    end = min(p + len(ids), N_MEM)
    rows[task][p:end] = ids[:end - p]
    p = 0 if end == N_MEM else end
    if shared:
      shared_pointer = p
    else:
      pointers[task] = p
  return rows, [shared_pointer] * T if shared else pointers


def check_memory(memory, writes, shared):
  rows, pointers = simulate_writes(writes, shared)
  expected_valid = np.array([[r is not None for r in row] for row in rows])
  np.testing.assert_array_equal(memory.valid, expected_valid)
  np.testing.assert_array_equal(np.where(memory.valid, memory.y, -1),
                                [[-1 if r is None else r for r in row] for row in rows])
  np.testing.assert_array_equal(memory.pointer, pointers)
  return expected_valid


@pytest.mark.parametrize("shared", [False, True])
def test_memory_writes_follow_the_official_ring_buffer(shared):
  """n = 6: cut at n (no wrap), pointer reset to 0 when full; a new task starts at
  row 0 (per-task pointer) or where the shared pointer stands. Batches are padded
  to 7 samples with weight-0 ones in between, which are not written."""
  writes = [(0, [1, 2, 3, 4]), (0, [5, 6, 7, 8]), (0, [9, 10, 11, 12]),
            (1, [13, 14, 15, 16]), (2, [17, 18]), (0, [19, 20, 21, 22, 23, 24, 25])]
  write = jax.jit(episodic_memory.write, static_argnames="shared_pointer",
                  compiler_options=FAST_COMPILE)
  memory = episodic_memory.init(T, N_MEM, (2,))
  rng = np.random.default_rng(0)
  for task, ids in writes:
    slots = np.sort(rng.choice(7, len(ids), replace=False))  # the real samples
    y = np.full(7, 99)
    y[slots] = ids
    batch = Batch(x=jnp.asarray(np.stack([y, -y], 1), jnp.float32), y=jnp.asarray(y),
                  task=jnp.full((7,), 7, jnp.int32),  # ignored: `task` decides
                  weight=jnp.asarray(np.isin(np.arange(7), slots), jnp.float32))
    memory = write(memory, batch, jnp.int32(task), shared_pointer=shared)
  valid = check_memory(memory, writes, shared)
  np.testing.assert_array_equal(np.where(memory.valid, memory.x[..., 1], 1),
                                np.where(valid, -memory.y, 1))
  np.testing.assert_array_equal(episodic_memory.counts(memory), valid.sum(1))
  # Shared: task 1 started at row 4, so its filled rows are not a prefix.
  np.testing.assert_array_equal(valid[1], [0, 0, 0, 0, 1, 1] if shared else [1, 1, 1, 1, 0, 0])
  for k in range(T):
    b = episodic_memory.batch(memory, jnp.int32(k))
    np.testing.assert_array_equal(b.weight, valid[k].astype(np.float32))
    np.testing.assert_array_equal(b.task, np.full(N_MEM, k))


# --- GEM steps ---------------------------------------------------------------


def test_first_task_step_is_plain_clipped_sgd_and_fills_memory():
  rng = np.random.default_rng(0)
  state = init_state(rng)
  batch = make_batch(rng, 0)
  g = hand_grad(state.params, batch.x, batch.y, 0)
  assert np.linalg.norm(g) > CLIP
  new_state, metrics = assert_step(build()[1], state, batch, clip(g), projected=0)
  assert float(metrics["violations"]) == 0 and bool(metrics["finite"])
  check_memory(new_state.memory, [(0, [int(y) for y in batch.y])], shared=False)


def test_non_conflicting_gradient_is_left_untouched():
  state, batch, _, g = find_problem(
      lambda params, rows, g, _: np.all(memory_grads(params, rows) @ g > 0))
  assert_step(build()[1], state, batch, g, projected=0)


@pytest.mark.parametrize("buckets", [1, 3])
@pytest.mark.parametrize("clip_memory,margin", [(True, 0.0), (False, 0.5)])
def test_conflicting_step_equals_quadprog_projection(clip_memory, margin, buckets):
  """ε = 1e-3; clipped memory gradients (official, ‖G_k‖ = 0.05, so ε matters)
  with margin 0 (the dual solution is off the bound), or raw ones (original GEM)
  with margin 0.5; task-incremental heads. With 3 buckets the step at task 2
  reads memories 0 and 1 only, with 1 all three."""
  state, batch, rows, g = find_problem(some_conflict)
  assert min(np.linalg.norm(memory_grads(state.params, rows), axis=1)) > CLIP
  G = memory_grads(state.params, rows, CLIP if clip_memory else None)
  expected = quadprog_project(G, g, margin, 1e-3)
  assert np.abs(expected - g).max() * LR > 1e-4  # the projection is visible
  if margin == 0:  # ε is visible too
    assert np.abs(quadprog_project(G, g, margin, 0.0) - expected).max() * LR > 1e-5
  _, observe = build(clip_memory_grads=clip_memory, memory_strength=margin,
                     past_buckets=buckets)
  _, metrics = assert_step(observe, state, batch, expected, projected=1)
  assert float(metrics["violations"]) == np.sum(G @ g < 0)
  assert float(metrics["qp_residual"]) < 1e-5


def test_projected_step_satisfies_the_constraints():
  """ε = 0, margin 0: ⟨g̃, g_k⟩ ≥ 0 for every past task k, up to the float32
  rounding of g̃ recovered from the weights (lr 1 and a relative bound)."""
  state, batch, rows, g = find_problem(some_conflict)
  G = memory_grads(state.params, rows, CLIP)
  _, observe = build(qp_epsilon=0.0, memory_strength=0.0, lr=1.0)
  g_tilde, _ = observed_step(observe, state, batch, lr=1.0)
  assert np.all(G @ g_tilde >= -1e-5 * np.linalg.norm(G, axis=1) * np.linalg.norm(g))
  assert np.min(cosines(G, g)) < -0.1  # it was violated before


@pytest.mark.parametrize("buckets", [1, 3])
def test_future_and_current_task_memories_are_ignored(buckets):
  """At task 1, memories of tasks 1 and 2 oppose g but are not constraints (with
  1 bucket they are read and masked, with 3 not read)."""
  state, batch, _, g = find_problem(
      lambda params, rows, g, _: np.all(memory_grads(params, rows) @ g < 0),
      past=(1, 2), current=1)
  assert_step(build(past_buckets=buckets)[1], state, batch, g, projected=0)


def test_past_task_mask():
  """k is a past task of t iff first ≤ k < t and memory[k] has a filled row."""
  memory = memory_with({0: (np.zeros((2, DIM)), [0, 1]), 2: (np.zeros((1, DIM)), [4])})
  expected = {(0, 0): [0, 0, 0], (1, 0): [1, 0, 0], (2, 0): [1, 0, 0], (3, 0): [1, 0, 1],
              (3, 1): [0, 0, 1], (1, 1): [0, 0, 0]}
  for (task, first), mask in expected.items():
    np.testing.assert_array_equal(gem.past_tasks(memory, jnp.int32(task), first), mask)


def test_glances_are_repeated_steps_on_the_same_batch():
  state, batch, _, _ = find_problem(some_conflict)
  _, observe1 = build()
  twice, _ = build(glances=2)[1](state, batch, jnp.int32(0))
  once, _ = observe1(state, batch, jnp.int32(0))
  again, _ = observe1(once._replace(memory=state.memory), batch, jnp.int32(0))
  np.testing.assert_allclose(flat(twice.params), flat(again.params), atol=1e-6)
  assert not np.allclose(flat(once.params), flat(again.params), atol=1e-5)
  np.testing.assert_array_equal(twice.memory.valid, once.memory.valid)  # one write


def test_observe_traces_once_with_the_shared_pointer():
  """Several tasks and epochs, one trace; the option reaches the memory."""
  learner, _ = build(shared_pointer=True)
  chex.clear_trace_counter()
  observe = jax.jit(chex.assert_max_traces(learner.observe, n=1),
                    compiler_options=FAST_COMPILE)
  rng = np.random.default_rng(4)
  state = init_state(rng)
  writes = []
  for step, task in enumerate([0, 0, 0, 1, 1, 2]):
    batch = make_batch(rng, task)
    state, metrics = observe(state, batch, jnp.int32(step % 2))
    writes.append((task, [int(y) for y in batch.y]))
    assert bool(metrics["finite"])
  valid = check_memory(state.memory, writes, shared=True)
  assert not valid[2, 0]  # task 2 started mid-buffer


def test_nan_input_is_reported_not_finite():
  rng = np.random.default_rng(5)
  state = init_state(rng)
  batch = make_batch(rng, 0)
  _, metrics = build()[1](state, batch._replace(x=batch.x.at[0, 0].set(jnp.nan)),
                          jnp.int32(0))
  assert not bool(metrics["finite"])


def test_lr_can_be_swept_as_a_traced_scalar():
  learner, observe = build()
  rng = np.random.default_rng(6)
  batch = make_batch(rng, 0)
  state = jax.jit(lambda lr: learner.init(jax.random.PRNGKey(0), batch, lr=lr))(0.5)
  g = clip(hand_grad(state.params, batch.x, batch.y, 0))
  new_state, _ = observe(state, batch, jnp.int32(0))
  np.testing.assert_allclose(flat(new_state.params), flat(state.params) - 0.5 * g, atol=1e-6)
  with pytest.raises(ValueError, match="Cannot sweep"):
    learner.init(jax.random.PRNGKey(0), batch, memory_strength=0.1)


def test_predict_masks_to_the_task_head():
  """Task-incremental: task 1's own logits 2, 3; class-incremental: 0..3."""
  learner, _ = build()
  rng = np.random.default_rng(7)
  state = init_state(rng)
  x = make_batch(rng, 1).x
  logits = np.asarray(learner.predict(state, x, jnp.int32(1)))
  assert np.all(np.isneginf(logits[:, [0, 1, 4, 5]])) and np.all(np.isfinite(logits[:, 2:4]))
  incremental = dataclasses.replace(context(), class_incremental=True)
  logits = np.asarray(gem.make(gem.GEMHparams(), incremental).predict(state, x, jnp.int32(1)))
  assert np.all(np.isneginf(logits[:, 4:])) and np.all(np.isfinite(logits[:, :4]))


@pytest.mark.parametrize("field,value", [
    ("lr", -0.1), ("glances", 0), ("n_memories", 0), ("n_memories", 2.5),
    ("grad_clip_norm", 0.0), ("grad_clip_norm", float("inf")), ("shared_pointer", 1),
    ("memory_strength", -0.5), ("qp_epsilon", float("nan")),
    ("clip_memory_grads", "yes"), ("qp_iterations", 0), ("past_buckets", 0)])
def test_invalid_hyperparameters_name_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    gem.GEMHparams(**{field: value})


def test_method_export():
  method = gem.METHODS["gem"]
  hp = method.hparams()
  assert (hp.lr, hp.glances, hp.n_memories, hp.memory_strength, hp.qp_epsilon,
          hp.grad_clip_norm, hp.clip_memory_grads, hp.shared_pointer) == (
              0.03, 1, 10, 0.5, 1e-3, 2.0, True, False)
  assert gem.GEMHparams(grad_clip_norm=None).grad_clip_norm is None
  assert method.memory_samples(hp, context()) == 10 * T
  assert method.sweepable == ("lr",) and method.step_sizes == ("lr", "grad_clip_norm")


def test_past_only_gradients_equal_the_vmapped_ones():
  """Both `memory_gradients` computations: the same rows for past tasks, zeros
  (vmap: the memory's own gradient, masked later) elsewhere."""
  rng = np.random.default_rng(0)
  memory = memory_with({k: (rng.normal(size=(N_MEM, DIM)), rng.integers(0, OUT, N_MEM))
                        for k in range(T)})
  params = NET.init(jax.random.PRNGKey(0), jnp.zeros((1, DIM)))["params"]
  loss = base.make_loss(NET, None)
  past = jnp.asarray([True] + [False] * (T - 1))
  vmapped = gem.task_gradients(loss, params, memory, CLIP, past, "vmap")
  past_only = jax.jit(lambda p: gem.task_gradients(loss, p, memory, CLIP, past,
                                                   "past_only"))(params)
  np.testing.assert_allclose(past_only[0], vmapped[0], rtol=1e-5, atol=1e-7)
  assert np.abs(np.asarray(vmapped[1:])).max() > 0  # every row computed
  np.testing.assert_array_equal(past_only[1:], 0.0)
  with pytest.raises(ValueError, match="memory_gradients must be one of"):
    gem.GEMHparams(memory_gradients="fast")


def test_auto_memory_gradients_follow_the_network():
  mlp = context()
  conv = dataclasses.replace(mlp, network=networks.make_network("cifar_cnn", 100))
  hp = gem.GEMHparams()
  assert gem.memory_gradients_impl(hp, mlp) == "vmap"
  assert gem.memory_gradients_impl(hp, conv) == (
      "past_only" if jax.default_backend() == "cpu" else "vmap")
  assert gem.memory_gradients_impl(gem.GEMHparams(memory_gradients="past_only"),
                                   mlp) == "past_only"


@pytest.mark.parametrize("num_tasks,buckets,sizes", [
    (20, 4, (5, 10, 15, 20)), (20, 1, (20,)), (3, 4, (1, 2, 3)), (10, 3, (4, 7, 10)),
    (2, 2, (1, 2))])
def test_prefix_sizes_are_the_ceilings_of_equal_shares(num_tasks, buckets, sizes):
  assert gem.prefix_sizes(num_tasks, buckets) == sizes


def test_on_past_prefix_reads_the_smallest_prefix_holding_every_past_task():
  """Task t's past tasks are 0..t-1: the prefix read has the smallest R ≥ t."""
  memory = episodic_memory.init(20, 2, (DIM,))
  sizes = (5, 10, 15, 20)
  read = jax.jit(lambda task: gem.on_past_prefix(
      memory, task, lambda rows: jnp.int32(rows.y.shape[0]), sizes))
  expected = {0: 5, 1: 5, 5: 5, 6: 10, 10: 10, 11: 15, 15: 15, 16: 20, 19: 20}
  assert {t: int(read(jnp.int32(t))) for t in expected} == expected
  assert gem.on_past_prefix(memory, jnp.int32(3), lambda rows: rows.y.shape[0],
                            (20,)) == 20  # one size: no switch


def test_past_buckets_default_to_the_backend():
  assert gem.past_buckets_for(gem.GEMHparams()) == (
      4 if jax.default_backend() == "cpu" else 1)
  assert gem.past_buckets_for(gem.GEMHparams(past_buckets=2)) == 2
