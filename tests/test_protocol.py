"""The runner's side of the learner protocol: end_task, learner-owned metrics,
the IID schedule, results fields. A probe learner wraps La-MAML and records what
the runner hands it."""
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs
from lamaml_jax import checkpointing
from lamaml_jax import learners
from lamaml_jax import schedules
from lamaml_jax import task_program
from lamaml_jax import train
from lamaml_jax.learners import base
from lamaml_jax.learners import lamaml

TASKS, SAMPLES = 3, 100  # 10 steps a task


class ProbeState(NamedTuple):
  inner: Any
  end_task_calls: jax.Array  # [T] calls of end_task per task
  end_task_sums: jax.Array   # [T] sum of the inputs end_task saw
  end_task_labels: jax.Array  # [T] sum of the labels end_task saw
  batch_tasks: jax.Array     # [T] stream samples seen per task id


def make_probe(hp, context: base.BuildContext) -> base.Learner:
  inner = lamaml.make(hp, context)
  t = context.num_tasks

  def init(key, example, **sweep):
    zeros = lambda dtype: jnp.zeros((t,), dtype)
    return ProbeState(inner.init(key, example, **sweep), zeros(jnp.int32),
                      zeros(jnp.float32), zeros(jnp.int32), zeros(jnp.int32))

  def observe(state, batch, epoch):
    s, m = inner.observe(state.inner, batch, epoch)
    counts = state.batch_tasks.at[batch.task].add(1)
    return (state._replace(inner=s, batch_tasks=counts),
            {**m, "probe_tasks_in_batch": jnp.sum(
                jnp.bincount(batch.task, length=t) > 0).astype(jnp.float32)})

  def end_task(state, x, y, task):
    return state._replace(
        end_task_calls=state.end_task_calls.at[task].add(1),
        end_task_sums=state.end_task_sums.at[task].set(jnp.sum(x)),
        end_task_labels=state.end_task_labels.at[task].set(jnp.sum(y)))

  def summary(state):
    return {**inner.summary(state.inner), "end_task_calls": state.end_task_calls,
            "end_task_sums": state.end_task_sums,
            "end_task_labels": state.end_task_labels, "batch_tasks": state.batch_tasks}

  return base.Learner(init=init, observe=observe,
                      predict=lambda s, x, task: inner.predict(s.inner, x, task),
                      end_task=end_task, summary=summary)


@pytest.fixture
def probe(monkeypatch):
  spec = lamaml.METHODS["lamaml"]
  monkeypatch.setitem(learners.REGISTRY, "probe", base.Method(
      hparams=spec.hparams, make=make_probe, sweepable=spec.sweepable,
      step_sizes=("alpha_init",)))


def probe_config(**run):
  config = configs.get_config("lamaml", "mnist5k_rotations")
  config.method = "probe"
  config.num_tasks, config.samples_per_task = TASKS, SAMPLES
  config.learner.glances = 1
  for k, v in run.items():
    config[k] = v
  return config


def test_end_task_sees_each_tasks_preprocessed_training_data_once(probe, tmp_path):
  config = probe_config()
  out = train.run(config, str(tmp_path))
  assert out["end_task_calls"] == [1, 1, 1]
  bench = train.build(config).benchmarks[0]
  want = [float(np.sum(bench.train_x[t].astype(np.float32) / 255.0)) for t in range(TASKS)]
  np.testing.assert_allclose(out["end_task_sums"], want, rtol=1e-5)
  assert out["end_task_labels"] == [int(bench.train_y[t].sum()) for t in range(TASKS)]
  # Learner-owned metrics reach the log under their own names.
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert all(r["probe_tasks_in_batch"] == 1.0 for r in records if "loss" in r)


def test_end_task_runs_once_per_task_across_an_interruption(probe, tmp_path, monkeypatch):
  """Killed right after task 1's end_task (its checkpoint write fails), the run
  resumes from before it and still calls it exactly once for the final state."""
  config = probe_config(checkpoint_every_minutes=0.0, steps_per_program=4)
  whole = train.run(probe_config(), str(tmp_path / "whole"))
  saves, original = [], checkpointing.Checkpointer.save

  def failing_save(self, step, item):
    saves.append(step)
    if step == 20:  # after task 1's end_task and evaluation
      raise KeyboardInterrupt
    return original(self, step, item)

  with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
    patch.setattr(checkpointing.Checkpointer, "save", failing_save)
    train.run(config, str(tmp_path / "cut"))
  again = train.run(config, str(tmp_path / "cut"))
  assert again["end_task_calls"] == [1, 1, 1]
  assert again["accuracy_matrix"] == whole["accuracy_matrix"]


def test_iid_stream_mixes_tasks_and_keeps_the_matrix_shape(probe, tmp_path):
  config = probe_config(stream="iid", epochs=2)
  out = train.run(config, str(tmp_path))
  assert out["stream"] == "iid" and out["stream_steps"] == 2 * TASKS * SAMPLES // 10
  assert np.array(out["accuracy_matrix"]).shape == (TASKS, TASKS)
  assert out["ra"] is not None and out["bti"] is None and out["fwt"] is None
  # Every sample seen once per epoch, each with its own task id.
  assert out["batch_tasks"] == [2 * SAMPLES] * TASKS
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  mixed = [r["probe_tasks_in_batch"] for r in records if "loss" in r]
  assert np.mean(mixed) > 1.5  # batches of 10 from 3 tasks mix them
  assert out["end_task_calls"] == [1, 1, 1]  # once per evaluation segment


def test_iid_schedule_visits_every_sample_once_per_epoch():
  spec = task_program.StreamSpec(samples_per_task=12, batch_size=3, epochs=2)
  schedule = schedules.IIDSchedule(num_tasks=3, spec=spec)
  assert [schedule.steps(t) for t in range(3)] == [2, 3, 3]  # 8 steps, 3 points
  assert [schedule.offset(t) for t in range(4)] == [0, 2, 5, 8]
  x = jnp.arange(12, dtype=jnp.uint8)[:, None]
  y = jnp.arange(12, dtype=jnp.int32)
  task = jnp.repeat(jnp.arange(3, dtype=jnp.int32), 4)
  key = jax.random.PRNGKey(0)
  orders = task_program.epoch_orders(spec, key)
  batches = [task_program.stream_batch(spec, x, y, task, key, jnp.int32(g),
                                       lambda a: a.astype(jnp.float32), None, orders)[0]
             for g in range(spec.steps_per_task)]
  seen = np.concatenate([b.y for b in batches])
  assert sorted(seen[:12]) == list(range(12)) and sorted(seen[12:]) == list(range(12))
  for b in batches:  # per-sample task ids match the data
    np.testing.assert_array_equal(b.task, np.asarray(b.y) // 4)


def test_official_iid_batches_hold_k_tasks_of_equal_share():
  spec = task_program.StreamSpec(samples_per_task=40, batch_size=8, epochs=1,
                                 epoch_steps=50, tasks_per_batch=2, num_tasks=4)
  x = jnp.arange(40, dtype=jnp.uint8)[:, None]
  y = jnp.arange(40, dtype=jnp.int32)
  task = jnp.repeat(jnp.arange(4, dtype=jnp.int32), 10)
  key = jax.random.PRNGKey(1)
  orders = task_program.epoch_orders(spec, key)
  pairs = set()
  for g in range(spec.steps_per_task):
    b = task_program.stream_batch(spec, x, y, task, key, jnp.int32(g), lambda a: a, None,
                                  orders)[0]
    tasks, counts = np.unique(np.asarray(b.task), return_counts=True)
    assert list(counts) == [4, 4] and len(set(np.asarray(b.y).tolist())) == 8
    np.testing.assert_array_equal(b.task, np.asarray(b.y) // 10)
    pairs.add(tuple(tasks))
  assert len(pairs) == 6  # every pair of the 4 tasks turns up in 50 batches


def test_schedule_options_are_checked():
  with pytest.raises(ValueError, match="IID stream only"):
    schedules.make_schedule("tasks", num_tasks=2, samples_per_task=10, batch_size=5,
                            epochs=1, tasks_per_batch=2)
  with pytest.raises(ValueError, match="Unknown stream 'mixed'"):
    schedules.make_schedule("mixed", num_tasks=2, samples_per_task=10, batch_size=5,
                            epochs=1)
  with pytest.raises(ValueError, match="tasks_per_batch=3 must divide"):
    schedules.make_schedule("iid", num_tasks=4, samples_per_task=10, batch_size=8,
                            epochs=1, tasks_per_batch=3)


def test_class_incremental_heads_expose_forgetting_on_the_split_benchmark(tmp_path):
  """Online SGD on mnist5k_split: with each task's own 2-way head, old tasks stay
  far above chance; over one head of every class seen, the last task's classes
  take over (the usual class-incremental collapse)."""
  def run(heads, name):
    config = configs.get_config("online", "mnist5k_split")
    config.num_tasks, config.samples_per_task, config.heads = 3, 300, heads
    config.learner.lr = 0.05
    return np.array(train.run(config, str(tmp_path / name))["accuracy_matrix"])

  task_inc, class_inc = run("task", "task"), run("class_incremental", "class")
  assert task_inc[2, 0] > 0.75 and class_inc[2, 0] < 0.3
  assert class_inc[2, 2] > 0.75  # the newest task is learnt either way
  with pytest.raises(ValueError, match="class-incremental head needs a split"):
    config = configs.get_config("online", "mnist5k_rotations")
    config.heads = "class_incremental"
    train.build(config)
