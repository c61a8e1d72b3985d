"""The methods table: aggregation of results.json files, and its command."""
import csv
import io
import json
import os
import subprocess
import sys

import pytest

from lamaml_jax import results_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(root, name, process_s=None, **fields):
  d = root / name
  d.mkdir()
  (d / "results.json").write_text(json.dumps({"status": "complete", "setting": "s",
                                              "wall_time_s": 1.0, **fields}))
  if process_s is not None:
    (d / "process_time.json").write_text(json.dumps({"wall_s": process_s}))


def test_collect_means_and_stds_over_seeds(tmp_path):
  _write(tmp_path, "a0", 10.0, method="er", dataset="d", seed=0, ra=0.7, bti=-0.1,
         forgetting=0.2, la=0.8)
  _write(tmp_path, "a1", 14.0, method="er", dataset="d", seed=1, ra=0.8, bti=-0.3,
         forgetting=0.1, la=0.9)
  _write(tmp_path, "b0", None, method="iid", dataset="d", seed=0, ra=0.9, bti=None,
         forgetting=None, la=None)
  _write(tmp_path, "c0", 5.0, method="er", dataset="d", seed=2, ra=0.1,
         status="diverged")
  rows = results_table.collect(str(tmp_path))
  er, iid = rows
  assert er["method"] == "er" and er["seeds"] == [0, 1] and er["runs"] == 2
  assert er["ra"] == pytest.approx([0.75, 0.0707106781]) and er["bti"][0] == pytest.approx(-0.2)
  assert er["wall_s"] == pytest.approx([12.0, 2.8284271247])  # the processes' times
  assert iid["ra"] == [0.9, None] and iid["bti"] is None  # one seed; null metric
  assert iid["wall_s"] == [1.0, None]  # no process time: the in-process one
  table = results_table.markdown(rows)
  assert "| er | d | 2 | 75.0 ± 7.1 | -20.0 ± 14.1 | 15.0 ± 7.1 | 12.0 ± 2.8 |" in table
  assert "| iid | d | 1 | 90.0 | — | — | 1.0 |" in table


def test_members_of_one_process_count_as_seeds(tmp_path):
  _write(tmp_path, "m", 20.0, method="lamaml", dataset="d", seed=0, ra=0.5, members=[
      {"seed": 0, "status": "complete", "ra": 0.5},
      {"seed": 1, "status": "complete", "ra": 0.7}])
  (row,) = results_table.collect(str(tmp_path))
  assert row["seeds"] == [0, 1] and row["ra"][0] == pytest.approx(0.6)


def test_methods_table_command_runs_and_resumes(tmp_path):
  command = [sys.executable, "benchmarks/methods_table.py", f"--out={tmp_path}",
             "--methods=icarl", "--datasets=mnist5k_rotations,mnist5k_split",
             "--seeds=0-1", "--",
             "--config.num_tasks=2", "--config.samples_per_task=40"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "icarl mnist5k_rotations      no cell: skipped" in r.stdout
  assert "| icarl | mnist5k_split | 2 |" in r.stdout
  assert os.path.exists(tmp_path / "icarl_mnist5k_split_seed1" / "process_time.json")
  rows = json.loads((tmp_path / "table.json").read_text())
  assert rows[0]["seeds"] == [0, 1]
  again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
  assert "seed 0:" not in again.stdout  # complete runs are not repeated


def test_collect_command_gathers_several_directories_with_the_paper_figure(tmp_path):
  for root, seed, ra in (("a", 0, 0.7), ("b", 1, 0.8)):
    (tmp_path / root).mkdir()
    _write(tmp_path / root, "run", method="lamaml", dataset="cifar100",
           setting="multi_pass", seed=seed, ra=ra, bti=-0.1, forgetting=0.1, la=0.8)
    (tmp_path / root / "run" / "config.json").write_text(json.dumps({"paper_ra": 70.08}))
  _write(tmp_path / "a", "other", method="er", dataset="cifar100",
         setting="multi_pass", seed=0, ra=0.6)
  out = tmp_path / "table"
  r = subprocess.run([sys.executable, "-m", "lamaml_jax.collect", str(tmp_path / "a"),
                      str(tmp_path / "b"), f"--out={out}"], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  assert ("| lamaml | cifar100 | multi_pass | 2 | 75.0 ± 7.1 | -10.0 ± 0.0 | "
          "10.0 ± 0.0 | 1.0 ± 0.0 | 70.08 |") in r.stdout
  assert "| er | cifar100 | multi_pass | 1 | 60.0 | — | — | 1.0 | — |" in r.stdout
  rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
  assert rows[1]["method"] == "lamaml" and rows[1]["seeds"] == "0 1"
  assert float(rows[1]["ra_mean"]) == pytest.approx(0.75) and rows[1]["paper_ra"] == "70.08"
  assert rows[0]["bti_mean"] == "" and rows[0]["paper_ra"] == ""
  assert (out / "table.md").read_text().strip() in r.stdout
  bad = subprocess.run([sys.executable, "-m", "lamaml_jax.collect",
                        str(tmp_path / "missing")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert bad.returncode == 1 and "is not a directory of runs" in bad.stderr
