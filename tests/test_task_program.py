"""Compiled task programs: stream order, no host transfers, evaluation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs
from lamaml_jax import task_program
from lamaml_jax import train


def small_config():
  config = configs.get_config("lamaml", "mnist5k_rotations")
  config.num_tasks, config.samples_per_task, config.learner.glances = 2, 50, 1
  config.epochs = 2
  return config


def test_each_epoch_visits_every_sample_once_in_its_own_order():
  spec = task_program.StreamSpec(samples_per_task=20, batch_size=5, epochs=2)
  x = jnp.arange(20, dtype=jnp.uint8)[:, None]
  y = jnp.arange(20, dtype=jnp.int32)
  tasks = jnp.full((20,), 3, jnp.int32)
  key = jax.random.PRNGKey(0)
  orders = task_program.epoch_orders(spec, key)
  seen = [int(v) for g in range(spec.steps_per_task) for v in task_program.stream_batch(
      spec, x, y, tasks, key, jnp.int32(g), lambda a: a.astype(jnp.float32),
      None, orders)[0].y]
  assert sorted(seen[:20]) == list(range(20)) and sorted(seen[20:]) == list(range(20))
  assert seen[:20] != seen[20:]
  batch, epoch = task_program.stream_batch(spec, x, y, tasks, key, jnp.int32(7),
                                           lambda a: a.astype(jnp.float32), None, orders)
  assert int(epoch) == 1 and np.all(np.asarray(batch.task) == 3)
  np.testing.assert_array_equal(batch.x[:, 0], batch.y)


def test_a_whole_task_runs_without_host_transfers():
  config = small_config()
  config.num_seeds = 2
  parts = train.build(config)
  members, benchmarks, learner = parts.members, parts.benchmarks, parts.learner
  spec, train_fn, evaluate = parts.schedule.spec, parts.train, parts.evaluate
  example = train.example_batch(benchmarks[0], 10)
  stack = lambda f: jax.device_put(np.stack([f(benchmarks[m["seed"]]) for m in members]))
  task_x, task_y = stack(lambda b: b.train_x[0]), stack(lambda b: b.train_y[0])
  tasks = stack(lambda b: np.zeros(b.samples_per_task, np.int32))
  test_x, test_y = stack(lambda b: b.test_x), stack(lambda b: b.test_y)
  task, start = jax.device_put(np.int32(0)), jax.device_put(np.int32(0))
  seen = jax.device_put(np.int32(1))
  # Compile first (compilation itself moves constants); then run guarded.
  state, keys = train.init_members(learner, members, example)
  length = jax.device_put(np.int32(spec.steps_per_task))
  state, _ = train_fn(state, task_x, task_y, tasks, task, keys, start, length,
                      num_steps=spec.steps_per_task)  # donates its state argument
  member_data = jax.device_put(np.arange(2, dtype=np.int32))
  evaluate(state, test_x, test_y, member_data, seen)
  state, keys = train.init_members(learner, members, example)
  with jax.transfer_guard("disallow"):
    state, metrics = train_fn(state, task_x, task_y, tasks, task, keys, start, length,
                              num_steps=spec.steps_per_task)
    correct = evaluate(state, test_x, test_y, member_data, seen)
  assert metrics["loss"].shape == (2, spec.steps_per_task)  # 2 epochs x 5 batches
  assert correct.shape == (2, 2) and int(jax.device_get(correct).max()) <= test_y.shape[2]


def test_programs_of_any_length_compute_what_one_scan_computes():
  """The run's dynamic-length program, split 3 + 1 + 6 steps with one executable,
  ends bit for bit where the static scan over all 10 steps ends."""
  config = small_config()
  parts = train.build(config)
  benchmark, learner, spec = parts.benchmarks[0], parts.learner, parts.schedule.spec
  scan = task_program.make_train_program(learner, spec, benchmark.preprocess, None,
                                         "map", train._train_compiler_options())  # pylint: disable=protected-access
  example = train.example_batch(benchmark, 10)
  data = [jax.device_put(a[None]) for a in (
      benchmark.train_x[0], benchmark.train_y[0],
      np.zeros(benchmark.samples_per_task, np.int32))]
  task = jax.device_put(np.int32(0))
  i32 = lambda v: jax.device_put(np.int32(v))
  state, keys = train.init_members(learner, parts.members, example)
  want, want_m = scan(state, *data, task, keys, i32(0), num_steps=10)
  state, keys = train.init_members(learner, parts.members, example)
  programs = task_program.CompiledAhead(parts.train)
  got_m, start = [], 0
  with programs:
    for n in (3, 1, 6):
      state, m = programs(state, *data, task, keys, i32(start), i32(n), num_steps=10)
      assert all(np.all(v[:, n:] == 0) for v in jax.device_get(m).values())
      got_m.append(jax.device_get(m)["loss"][:, :n])
      start += n
    assert len(programs._executables) == 1  # pylint: disable=protected-access
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state),
                         jax.device_get(want))
  np.testing.assert_array_equal(np.concatenate(got_m, 1), jax.device_get(want_m)["loss"])


def test_evaluation_counts_correct_answers():
  class Oracle:  # predicts the label hidden in the first pixel
    @staticmethod
    def predict(state, x, task):
      del state, task
      return jax.nn.one_hot(x[:, 0].astype(jnp.int32), 10)

  evaluate = task_program.make_eval_program(Oracle, lambda a: a, eval_batch_size=4)
  y = jnp.array([[1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0]], jnp.int32)
  # Task 0: first pixel = label (all right); task 1: half of them wrong.
  x = jnp.stack([y[0], jnp.array([0, 1, 0, 1, 0, 1])])[..., None]
  state = jnp.zeros((1,))  # one member
  np.testing.assert_array_equal(
      evaluate(state, x[None].astype(jnp.float32), y[None], jnp.zeros((1,), jnp.int32),
               jnp.int32(2)), [[6, 3]])
  # The official MNIST quirk: the last sample of each task is never scored (task
  # 0's was right, task 1's wrong), the count still divided by all 6 samples.
  drop_last = task_program.make_eval_program(Oracle, lambda a: a, eval_batch_size=4,
                                             drop_last=True)
  np.testing.assert_array_equal(
      drop_last(state, x[None].astype(jnp.float32), y[None], jnp.zeros((1,), jnp.int32),
                jnp.int32(2)), [[5, 3]])


@pytest.mark.parametrize("batching", ["map", "vmap"])
def test_members_are_scored_on_their_own_seeds_data(batching):
  """Two data sets, three members: each member's counts are those of the data
  set member_data names (a grid's members share their seed's copy)."""
  class Oracle:  # right when the first pixel holds the label
    @staticmethod
    def predict(state, x, task):
      del state, task
      return jax.nn.one_hot(x[:, 0].astype(jnp.int32), 10)

  evaluate = task_program.make_eval_program(Oracle, lambda a: a, 2, batching)
  y = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]], jnp.int32)  # [T, n]
  right = y[..., None].astype(jnp.float32)
  half = right.at[:, ::2].set(0.0)
  data_x, data_y = jnp.stack([right, half]), jnp.stack([y, y])  # [S, T, n, 1]
  counts = evaluate(jnp.zeros((3,)), data_x, data_y, jnp.array([1, 0, 1], jnp.int32),
                    jnp.int32(2))
  np.testing.assert_array_equal(counts, [[2, 2], [4, 4], [2, 2]])


def test_class_incremental_evaluation_masks_to_every_class_seen():
  """A model whose logits favour class 5 (task 2's, C = 2) above all, then class
  2t for inputs of task t: task-incremental heads never offer class 5 to tasks 0
  and 1; class-incremental heads do once task 2 has been trained."""
  from lamaml_jax import heads  # pylint: disable=g-import-not-at-top

  def make(incremental):
    layout = heads.Heads(2, incremental)

    class Model:
      @staticmethod
      def predict(state, x, task):
        del state
        logits = jnp.zeros((x.shape[0], 6)).at[:, 5].set(10.0)
        logits = logits.at[jnp.arange(x.shape[0]), (2 * x[:, 0]).astype(jnp.int32)].set(1.0)
        return heads.mask_logits(logits, task, layout)
    return task_program.make_eval_program(Model, lambda a: a, 4,
                                          class_incremental=incremental)

  y = jnp.array([[0, 0], [2, 2], [4, 4]], jnp.int32)
  x = jnp.array([[0, 0], [1, 1], [2, 2]], jnp.float32)[..., None][None]
  one = jnp.zeros((1,), jnp.int32)  # member 0 reads data set 0
  # Task-incremental: tasks 0, 1 right on their own heads, whatever was seen;
  # task 2's own head holds class 5, which wins.
  np.testing.assert_array_equal(make(False)(jnp.zeros((1,)), x, y[None], one, jnp.int32(3)),
                                [[2, 2, 0]])
  inc = make(True)
  # After task 1: tasks 0, 1 compete over classes 0-3 (no 5): right; task 2 is
  # scored over classes 0-5 and class 5 wins.
  np.testing.assert_array_equal(inc(jnp.zeros((1,)), x, y[None], one, jnp.int32(2)),
                                [[2, 2, 0]])
  # After task 2: class 5 is seen and wins everywhere.
  np.testing.assert_array_equal(inc(jnp.zeros((1,)), x, y[None], one, jnp.int32(3)),
                                [[0, 0, 0]])


class _CountingProgram:
  """A jitted toy program that counts its compilations."""

  def __init__(self):
    self.lowered = []
    self._jitted = jax.jit(lambda s, x, num_steps: s * num_steps + x,
                           static_argnames="num_steps", donate_argnums=0)

  def lower(self, *args, num_steps):
    self.lowered.append(num_steps)
    return self._jitted.lower(*args, num_steps=num_steps)


def test_compiled_ahead_compiles_each_length_once_from_shapes():
  program = _CountingProgram()
  shape = jax.ShapeDtypeStruct((3,), jnp.float32)
  with task_program.CompiledAhead(program) as programs:
    programs.compile_ahead(shape, shape, num_steps=4)
    x = jnp.arange(3, dtype=jnp.float32)
    out = programs(jnp.ones(3), x, num_steps=4)
    out = programs(out, x, num_steps=4)
    np.testing.assert_array_equal(out, (1.0 * 4 + x) * 4 + x)
    assert program.lowered == [4]
    # A length never announced compiles on its first call, once.
    np.testing.assert_array_equal(programs(jnp.ones(3), x, num_steps=2), 2.0 + x)
    programs(jnp.ones(3), x, num_steps=2)
    assert program.lowered == [4, 2]


def test_compiled_ahead_raises_tracing_errors_in_the_caller():
  program = _CountingProgram()
  with task_program.CompiledAhead(program) as programs:
    with np.testing.assert_raises(TypeError):  # shapes that cannot broadcast
      programs.compile_ahead(jax.ShapeDtypeStruct((3,), jnp.float32),
                             jax.ShapeDtypeStruct((2,), jnp.float32), num_steps=1)


def test_member_shapes_are_those_of_the_initialised_members():
  config = small_config()
  config.num_seeds = 2
  parts = train.build(config)
  members, benchmarks, learner = parts.members, parts.benchmarks, parts.learner
  example = train.example_batch(benchmarks[0], 10)
  shapes = train.member_shapes(learner, members, example)
  values = train.init_members(learner, members, example)
  spec = lambda t: jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), t)
  assert spec(shapes) == spec(values)
