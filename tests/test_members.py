"""Several seeds and hyperparameter settings as one vmapped program."""
import numpy as np
import pytest

import configs
from lamaml_jax import members
from lamaml_jax import train


def small_config(**kw):
  config = configs.get_config("lamaml", "mnist5k_rotations")
  config.num_tasks, config.samples_per_task, config.learner.glances = 2, 100, 2
  for k, v in kw.items():
    setattr(config, k, v)
  return config


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
  out = {}
  for seed, alpha in [(0, 0.15), (1, 0.15), (0, 0.05)]:
    config = small_config(seed=seed)
    config.learner.alpha_init = alpha
    out[seed, alpha] = train.run(config, str(tmp_path_factory.mktemp("single")))
  return out


def test_seeds_equal_separate_single_seed_runs(single_runs, tmp_path):
  results = train.run(small_config(num_seeds=2), str(tmp_path))
  assert results["num_members"] == 2 and [m["seed"] for m in results["members"]] == [0, 1]
  for member in results["members"]:
    single = single_runs[member["seed"], 0.15]
    np.testing.assert_array_equal(member["accuracy_matrix"], single["accuracy_matrix"])
    assert member["ra"] == single["ra"]
  assert results["accuracy_matrix"] == results["members"][0]["accuracy_matrix"]
  ras = [m["ra"] for m in results["members"]]
  np.testing.assert_allclose(results["mean_std"]["ra"], [np.mean(ras), np.std(ras, ddof=1)])


def test_grid_members_equal_separate_runs(single_runs, tmp_path):
  results = train.run(small_config(grid="alpha_init=0.05,0.15"), str(tmp_path))
  got = {m["alpha_init"]: m["accuracy_matrix"] for m in results["members"]}
  np.testing.assert_array_equal(got[0.05], single_runs[0, 0.05]["accuracy_matrix"])
  np.testing.assert_array_equal(got[0.15], single_runs[0, 0.15]["accuracy_matrix"])


def test_a_diverging_member_is_marked_and_the_rest_go_on(tmp_path):
  config = small_config(grid="opt_lr=0.3,1e12")
  config.learner.grad_clip_norm = 1e30
  results = train.run(config, str(tmp_path))
  good, bad = results["members"]
  assert good["status"] == "complete" and good["tasks_completed"] == 2
  assert bad["status"] == "diverged" and "opt_lr=1e+12" in bad["message"]
  assert all(v is None for v in bad["accuracy_matrix"][-1])
  assert [g["mean_std_over"] for g in results["by_setting"]] == [1, 0]


def test_grid_results_are_grouped_by_setting(tmp_path):
  results = train.run(small_config(num_seeds=2, grid="alpha_init=0.05,0.15"),
                      str(tmp_path))
  groups = results["by_setting"]
  assert [g["setting"] for g in groups] == [{"alpha_init": 0.05}, {"alpha_init": 0.15}]
  for g in groups:
    ras = [m["ra"] for m in results["members"]
           if m["alpha_init"] == g["setting"]["alpha_init"]]
    assert g["seeds"] == [0, 1]
    np.testing.assert_allclose(g["mean_std"]["ra"], [np.mean(ras), np.std(ras, ddof=1)])
  assert "mean_std" not in results  # no pooling across settings


def test_parse_grid_and_members():
  grid = members.parse_grid("alpha_init=0.1,0.2; opt_lr=0.3", ("alpha_init", "opt_lr"))
  assert grid == {"alpha_init": [0.1, 0.2], "opt_lr": [0.3]}
  ms = members.make_members(5, 2, grid)
  assert [(m["seed"], m["alpha_init"]) for m in ms] == [(5, 0.1), (6, 0.1), (5, 0.2), (6, 0.2)]
  assert members.make_members(0, 1, {}) == [{"seed": 0}]
  for text, pattern in [("glances=2", "NAME in alpha_init, opt_lr"),
                        ("opt_lr=fast", "must be numbers"),
                        ("opt_lr=-1", ">= 0"), ("opt_lr=1;opt_lr=2", "twice")]:
    with pytest.raises(ValueError, match=pattern):
      members.parse_grid(text, ("alpha_init", "opt_lr"))
  with pytest.raises(ValueError, match="num_seeds must be >= 1"):
    members.make_members(0, 0, {})
  for seed, n in [(-1, 1), (2**32 - 1, 2)]:
    with pytest.raises(ValueError, match=r"Seeds must lie in \[0, 2\*\*32\)"):
      members.make_members(seed, n, {})
  assert members.make_members(2**32 - 2, 2, {})[-1] == {"seed": 2**32 - 1}


def test_vmapped_members_agree_with_mapped_ones_up_to_rounding():
  import jax
  import jax.numpy as jnp
  # ER: the member axis is method-agnostic, and its programs compile fastest.
  config = configs.get_config("er", "mnist5k_rotations")
  config.num_tasks, config.samples_per_task, config.num_seeds = 2, 100, 2
  states = {}
  for batching in ("map", "vmap"):
    config.member_batching = batching
    parts = train.build(config)
    ms, benches = parts.members, parts.benchmarks
    state, keys = train.init_members(parts.learner, ms,
                                     train.example_batch(benches[0], 10))
    x = jnp.stack([benches[m["seed"]].train_x[0] for m in ms])
    y = jnp.stack([benches[m["seed"]].train_y[0] for m in ms])
    tasks = jnp.zeros(y.shape, jnp.int32)
    states[batching], _ = parts.train(state, x, y, tasks, jnp.int32(0), keys,
                                      jnp.int32(0), jnp.int32(3), num_steps=3)
  for a, b in zip(jax.tree_util.tree_leaves(states["map"].params),
                  jax.tree_util.tree_leaves(states["vmap"].params)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_init_members_uses_each_seeds_own_keys():
  """Member m's state and data key come from PRNGKey(seed) split in two, as a
  single-seed run's do, also for seeds beyond int32."""
  import jax
  import chex
  config = small_config()
  parts = train.build(config)
  benches, learner = parts.benchmarks, parts.learner
  example = train.example_batch(benches[0], 10)
  ms = [{"seed": 3}, {"seed": 2**31 + 5}]
  state, data_keys = train.init_members(learner, ms, example)
  for i, m in enumerate(ms):
    init_key, data_key = jax.random.split(jax.random.PRNGKey(m["seed"]))
    np.testing.assert_array_equal(data_keys[i], data_key)
    want = learner.init(init_key, example)
    # The init program is built without LLVM optimisation: last-bit differences.
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a: a[i], state.params),
                                want.params, rtol=1e-6, atol=1e-7)
