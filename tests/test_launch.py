"""SLURM launcher: one script per cell and seed, each resuming its own workdir."""
import os
import subprocess
import sys

import pytest

from lamaml_jax import members
from launch import slurm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_seeds():
  assert members.parse_seeds("0-2,7") == [0, 1, 2, 7]
  with pytest.raises(ValueError):
    members.parse_seeds(",")


def test_job_script_runs_the_cell_in_its_own_workdir():
  name, text = slurm.job_script(
      "cmaml", "cifar100", "single_pass", 3, ["--config.num_tasks=5"], runs="runs",
      data_dir="/data/tfds", partition="gpu", gpus=1, cpus=4, hours=2, setup="",
      repo="/repo")
  assert name == "cmaml_cifar100_single_pass_seed3"
  assert "#SBATCH --requeue" in text and "#SBATCH --gres=gpu:1" in text
  assert ("python -m lamaml_jax.main --method=cmaml --dataset=cifar100 "
          "--setting=single_pass --seed=3 --workdir=runs/cmaml_cifar100_single_pass_seed3 "
          "--data_dir=/data/tfds --config.num_tasks=5") in text
  with pytest.raises(ValueError, match="single-pass benchmark"):
    slurm.job_script("laer", "mnist_rotations", "multi_pass", 0, [], runs="r",
                     data_dir=None, partition=None, gpus=0, cpus=1, hours=1, setup="",
                     repo="/repo")


def test_cli_writes_scripts(tmp_path):
  out = tmp_path / "jobs"
  r = subprocess.run([sys.executable, "-m", "launch.slurm", "--methods=lamaml,sync",
                      "--datasets=mnist_rotations", "--settings=single_pass",
                      "--seeds=0-1", f"--out={out}"], cwd=ROOT, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  scripts = sorted(p.name for p in out.iterdir())
  assert len(scripts) == 5 and "submit_all.sh" in scripts
  assert (out / "submit_all.sh").read_text().count("sbatch ") == 4
