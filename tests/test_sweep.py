"""Sweep descriptions: cells, their configs, the local run and its table."""
import os
import subprocess
import sys

import pytest

from lamaml_jax import members
from lamaml_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_seeds():
  assert members.parse_seeds("0-2,7") == [0, 1, 2, 7]
  with pytest.raises(ValueError):
    members.parse_seeds(",")


def test_cells_are_the_product_with_the_cells_the_paper_lacks_skipped():
  cells, skipped = sweep.cells(sweep.description(
      methods="lamaml,icarl", datasets="mnist5k_rotations,mnist5k_split,cifar100",
      settings="single_pass,multi_pass", seeds="3-5",
      overrides="num_tasks=4; learner.glances=2"))
  names = [c.name for c in cells]
  assert names == ["lamaml_mnist5k_rotations_single_pass",
                   "lamaml_mnist5k_split_single_pass", "lamaml_cifar100_single_pass",
                   "lamaml_cifar100_multi_pass", "icarl_mnist5k_split_single_pass",
                   "icarl_cifar100_single_pass", "icarl_cifar100_multi_pass"]
  assert len(skipped) == 5 and any(s.startswith("icarl_mnist5k_rotations") for s in skipped)
  config = cells[2].config()
  assert (config.method, config.dataset, config.setting) == ("lamaml", "cifar100",
                                                             "single_pass")
  assert (config.seed, config.num_seeds, config.grid) == (3, 3, "")
  assert config.num_tasks == 4 and config.learner.glances == 2
  assert cells[0].command("runs") == (
      "python -m lamaml_jax.main --method=lamaml --dataset=mnist5k_rotations "
      "--setting=single_pass --seed=3 --config.num_seeds=3 "
      "--config.num_tasks=4 "
      "--config.learner.glances=2 --workdir=runs/lamaml_mnist5k_rotations_single_pass")


def test_a_grid_sets_every_cells_members():
  cells, _ = sweep.cells(sweep.description(methods="lamaml", datasets="cifar100",
                                           grid="alpha_init=0.1,0.3"))
  assert cells[0].config().grid == "alpha_init=0.1,0.3"
  assert "--config.grid='alpha_init=0.1,0.3'" in cells[0].command("runs")


@pytest.mark.parametrize("fields, message", [
    ({"seeds": "0,2"}, "must be consecutive"),
    ({"methods": ""}, "at least one method"),
    ({"methods": "nope"}, "Unknown method 'nope'"),
    ({"datasets": "mnist9"}, "Unknown dataset"),
    ({"grid": "momentum=0.1"}, "er_mnist5k_rotations: Bad grid entry"),
    ({"overrides": "num_taks=3"}, "no field 'num_taks'"),
])
def test_a_bad_sweep_is_refused_before_anything_runs(fields, message):
  description = sweep.description(methods="er", datasets="mnist5k_rotations")
  description.update(fields)
  with pytest.raises(ValueError, match=message):
    sweep.cells(description)


def test_a_local_sweep_runs_each_cell_once_and_resumes_nothing_done(tmp_path, capsys):
  description = sweep.description(methods="online,er", datasets="mnist5k_rotations",
                                  seeds="0-1",
                                  overrides="num_tasks=2;samples_per_task=20")
  results = sweep.run(description, str(tmp_path))
  assert [r["method"] for r in results] == ["online", "er"]
  assert all(r["num_members"] == 2 and r["status"] == "complete" for r in results)
  again = sweep.run(description, str(tmp_path), cell=1)  # an array task's call
  assert again == [results[1]] and "complete, reused" in capsys.readouterr().out
  with pytest.raises(ValueError, match="has 2 cells"):
    sweep.run(description, str(tmp_path), cell=2)


def test_the_sweep_command_lists_cells_without_running_them(tmp_path):
  path = os.path.join(ROOT, "configs", "sweeps", "mnist5k_table.py")
  r = subprocess.run([sys.executable, "-m", "lamaml_jax.sweep", f"--sweep={path}",
                      "--sweep.methods=icarl,er", "--list"], cwd=tmp_path,
                     capture_output=True, text=True, timeout=120,
                     env={**os.environ, "PYTHONPATH": ROOT})
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert lines[0].startswith("  0 icarl_mnist5k_split: python -m lamaml_jax.main")
  assert sum(l.startswith("  - skipped") for l in lines) == 2 and len(lines) == 6
  assert not os.listdir(tmp_path)
  r = subprocess.run([sys.executable, "-m", "lamaml_jax.sweep", f"--sweep={path}",
                      "--sweep.seeds=0,3", "--workdir=w"], cwd=tmp_path, capture_output=True,
                     text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
  assert r.returncode != 0 and "must be consecutive" in r.stderr, r.stderr


def test_every_shipped_sweep_expands():
  directory = os.path.join(ROOT, "configs", "sweeps")
  for name in sorted(os.listdir(directory)):
    if name.endswith(".py") and name != "__init__.py":
      namespace = {}
      exec(open(os.path.join(directory, name)).read(), namespace)  # pylint: disable=exec-used
      cells, _ = sweep.cells(namespace["get_config"]())
      assert cells, name
