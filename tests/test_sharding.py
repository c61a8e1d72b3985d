"""Members sharded over devices (`members.Placement`).

The tests that need several devices run in a child pytest on eight XLA:CPU host
devices (`--xla_force_host_platform_device_count`, which must be set before JAX
starts); in the suite's own process, which has one CPU device, only the test
that launches them runs.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import configs
from lamaml_jax import members
from lamaml_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
eight_devices = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")


def test_the_device_tests_pass_on_eight_host_devices(tmp_path):
  if jax.device_count() >= 2:
    pytest.skip("already on several devices")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": (
      f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8")}
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
       "no:xdist", __file__],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
  # Every eight-device test ran (none skipped) and this one skipped itself.
  assert "1 skipped" in proc.stdout and "passed" in proc.stdout, proc.stdout[-2000:]


@eight_devices
def test_placement_pads_members_to_a_multiple_of_the_devices():
  place = members.Placement.create(3, "map", num_devices=2)
  assert place.num_devices == 2 and place.padded == 4
  assert place.pad(["a", "b", "c"]) == ["a", "b", "c", "c"]
  tree = {"w": np.arange(6.).reshape(3, 2)}
  padded = place.pad_tree(tree)
  np.testing.assert_array_equal(padded["w"], [[0, 1], [2, 3], [4, 5], [4, 5]])
  np.testing.assert_array_equal(place.unpad(padded)["w"], tree["w"])
  # Never more devices than members; one device means no mesh at all.
  assert members.Placement.create(1, "map").mesh is None
  assert members.Placement.create(5, "map", num_devices=1).padded == 5
  assert members.Placement.create(5, "map").num_devices == 5
  with pytest.raises(ValueError, match="member_devices=9 but 8 device"):
    members.Placement.create(4, "map", num_devices=9)


@eight_devices
@pytest.mark.parametrize("batching", ["map", "vmap"])
def test_map_runs_each_block_of_members_on_its_own_device(batching):
  place = members.Placement.create(4, batching, num_devices=2)
  x = place.put(np.arange(8., dtype=np.float32).reshape(4, 2))
  scale = place.shared(np.float32(3.0))
  out = jax.jit(lambda x, s: place.map(lambda row: row * s + row.sum())(x))(x, scale)
  np.testing.assert_array_equal(out, np.arange(8.).reshape(4, 2) * 3
                                + np.array([[1], [5], [9], [13]]))
  assert {s.device for s in out.addressable_shards} == set(jax.devices()[:2])
  assert [s.data.shape for s in out.addressable_shards] == [(2, 2), (2, 2)]


def _config(member_devices, **kw):
  # iCaRL covers the end-of-task program, the probe the alignment program.
  config = configs.get_config("icarl", "mnist5k_split")
  config.num_tasks, config.samples_per_task, config.num_seeds = 3, 40, 3
  config.probes, config.probe_samples = "alignment", 8
  config.member_devices, config.checkpoint_every_minutes = member_devices, 0.0
  for k, v in kw.items():
    setattr(config, k, v)
  return config


def _outputs(results):
  return [(m["accuracy_matrix"], m["alignment"], m["ra"]) for m in results["members"]]


@eight_devices
def test_sharded_members_compute_what_one_device_computes_and_resume_on_one(
    tmp_path, run_stopped_after_checkpoints):
  # 3 members padded to 4 on two devices, stopped after task 2 (its evaluation,
  # end_task and the probe of task 3 ran sharded), finished on one device:
  # checkpoints hold the three real members, not the padding. The result equals
  # a run on one device throughout.
  one_device = train.run(_config(1), str(tmp_path / "one"))
  run_stopped_after_checkpoints(_config(2), str(tmp_path / "two"), stops=[8])
  log = [json.loads(l) for l in open(tmp_path / "two" / "metrics.jsonl")]
  assert [len(r["eval_accuracy_per_member"]) for r in log if "eval_accuracy" in r] == [3, 3]
  resumed = train.run(_config(1), str(tmp_path / "two"))
  assert resumed["devices"] == 1 and resumed["num_members"] == 3
  assert _outputs(resumed) == _outputs(one_device)


def _er(num_seeds, member_devices, seed=0):
  config = configs.get_config("er", "mnist5k_rotations")
  config.num_tasks, config.samples_per_task = 2, 20
  config.seed, config.num_seeds, config.member_devices = seed, num_seeds, member_devices
  return config


@eight_devices
def test_eight_and_five_sharded_members_equal_separate_single_member_runs(tmp_path):
  # 8 members on 8 devices; 5 on 4 devices (padded to 8, two a device).
  single = [train.run(_er(1, 1, seed=s), str(tmp_path / f"seed{s}")) for s in range(8)]
  single = [r["accuracy_matrix"] for r in single]
  for name, (m, d, used) in {"8x8": (8, 0, 8), "5x4": (5, 4, 4)}.items():
    out = train.run(_er(m, d), str(tmp_path / name))
    assert out["devices"] == used, name
    assert [r["accuracy_matrix"] for r in out["members"]] == single[:m], name
