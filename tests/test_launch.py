"""Cluster launchers: the SLURM job array of a sweep, one multi-GPU run, and the
Cloud TPU VM steps; every script passes shellcheck, and a job's requeue logic
is run against stand-ins for srun and scontrol."""
import os
import stat
import subprocess
import sys

import pytest

from launch import slurm
from launch import tpu_vm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "configs", "sweeps", "mnist5k_table.py")


def shellcheck(script: str, tmp_path) -> None:
  path = tmp_path / "job.sbatch"
  path.write_text(script)
  r = subprocess.run(["shellcheck", "--shell=bash", str(path)], capture_output=True,
                     text=True, timeout=60)
  assert r.returncode == 0, r.stdout + r.stderr


def test_array_script_runs_cell_i_in_task_i_and_requeues_on_the_warning(tmp_path):
  script = slurm.array_script(SWEEP, ["--sweep.seeds=0-2"], 6, "/runs/t", name="t",
                              gpus=1, cpus=8, hours=1.5, partition="gpu",
                              grace_seconds=240, max_parallel=2)
  for line in ["#SBATCH --array=0-5%2", "#SBATCH --time=1:30:00",
               "#SBATCH --signal=TERM@240", "#SBATCH --requeue",
               "#SBATCH --gpus-per-node=1", "#SBATCH --partition=gpu",
               "#SBATCH --output=/runs/t/slurm-%A_%a.log", f"cd {ROOT} || exit 1"]:
    assert line in script.splitlines(), line
  assert (f"srun python -m lamaml_jax.sweep --sweep={SWEEP} --sweep.seeds=0-2 "
          '--workdir=/runs/t --cell="$SLURM_ARRAY_TASK_ID" || rc=$?') in script
  shellcheck(script, tmp_path)
  with pytest.raises(ValueError, match="no cell"):
    slurm.array_script(SWEEP, [], 0, "/runs", name="t")


@pytest.mark.parametrize("srun_status, requeued, status",
                         [(143, True, 0), (0, False, 0), (1, False, 1)])
def test_a_job_requeues_itself_only_when_the_run_stopped_on_the_signal(
    tmp_path, srun_status, requeued, status):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  calls = tmp_path / "calls"
  for name, body in [("srun", f'echo "srun $*" >> {calls}; exit {srun_status}'),
                     ("scontrol", f'echo "scontrol $*" >> {calls}')]:
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
  script = tmp_path / "job.sbatch"
  script.write_text(slurm.run_script(["--method=er"], "/runs", name="job", gpus=0))
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "77"}
  r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                     timeout=60)
  assert r.returncode == status, r.stderr
  lines = calls.read_text().splitlines()
  assert lines[0] == "srun python -m lamaml_jax.main --method=er --workdir=/runs/job"
  assert (lines[1:] == ["scontrol requeue 77"]) == requeued, lines


def test_run_script_shards_one_run_over_the_nodes_gpus(tmp_path):
  script = slurm.run_script(["--method=lamaml", "--dataset=cifar100",
                             "--config.num_seeds=8"], "/runs", name="big", gpus=4,
                            data_dir="/data", setup="module load cuda")
  assert "#SBATCH --gpus-per-node=4" in script and "module load cuda" in script
  assert ("srun python -m lamaml_jax.main --method=lamaml --dataset=cifar100 "
          "--config.num_seeds=8 --workdir=/runs/big --data_dir=/data") in script
  shellcheck(script, tmp_path)
  assert "#SBATCH --nodes=1" in script and "#SBATCH --ntasks-per-node=1" in script
  assert "--distributed" not in script  # one process drives the node's GPUs
  with pytest.raises(ValueError, match="--runs and --job_name"):
    slurm.run_script(["--workdir=x"], "/runs", name="big")


@pytest.mark.parametrize("nodes,per_gpu,gpus,tasks", [(2, False, 4, 4), (1, True, 4, 4),
                                                       (3, False, 0, 1)])
def test_run_script_over_several_processes_starts_one_per_gpu(tmp_path, nodes, per_gpu,
                                                              gpus, tasks):
  script = slurm.run_script(["--method=lamaml", "--config.num_seeds=32"], "/runs",
                            name="big", gpus=gpus, nodes=nodes, process_per_gpu=per_gpu)
  assert f"#SBATCH --nodes={nodes}" in script
  assert f"#SBATCH --ntasks-per-node={tasks}" in script
  # JAX reads the coordinates from SLURM's environment: no address to pass.
  assert ("srun python -m lamaml_jax.main --method=lamaml --config.num_seeds=32 "
          "--workdir=/runs/big --distributed || rc=$?") in script
  shellcheck(script, tmp_path)


def _cli(*args, module="launch.slurm"):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, "PATH": "/usr/bin:/bin"})


def test_slurm_cli_dry_run_prints_the_job_and_writes_nothing(tmp_path):
  out = tmp_path / "jobs"
  r = _cli(f"--sweep={SWEEP}", "--sweep.methods=lamaml,er,icarl",
           "--sweep.datasets=mnist5k_rotations,mnist5k_split", f"--out={out}",
           f"--runs={tmp_path / 'runs'}", "--dry_run")
  assert r.returncode == 0, r.stderr
  # iCaRL has no rotations cell: 5 cells, and the skip is reported.
  assert "#SBATCH --array=0-4" in r.stdout and "icarl_mnist5k_rotations" in r.stderr
  assert "--sweep.methods=lamaml,er,icarl" in r.stdout
  assert f"# would run: sbatch {out}/mnist5k_table.sbatch" in r.stdout
  assert not out.exists()
  # Without --dry_run and without SLURM: one line saying what to do.
  r = _cli(f"--sweep={SWEEP}", f"--out={out}")
  assert r.returncode == 1 and "sbatch is not on PATH" in r.stderr, r.stderr
  r = _cli(f"--sweep={SWEEP}", "--nodes=2", "--dry_run")
  assert r.returncode == 1 and "--nodes must be 1 with --sweep" in r.stderr, r.stderr
  r = _cli("--nodes=2", "--job_name=x", "--dry_run", "--", "--method=er")
  assert r.returncode == 0 and "#SBATCH --nodes=2" in r.stdout, r.stderr


def test_tpu_vm_steps_create_install_run_on_every_worker_and_fetch():
  steps = tpu_vm.commands(["--method=lamaml", "--dataset=cifar100"], name="vm",
                          zone="z", accelerator_type="v4-8", version="img",
                          run_name="r", fetch_to="out", spot=True, delete=True)
  lines = [" ".join(s) for s in steps]
  assert lines[0] == ("gcloud compute tpus tpu-vm create vm --zone=z "
                      "--accelerator-type=v4-8 --version=img --spot")
  assert lines[1].startswith(f"git -C {ROOT} archive --format=tar.gz")
  install, run = steps[3], steps[4]
  assert "--worker=all" in install and "pip install -q -e '.[tpu]'" in install[-1]
  assert "--worker=all" in run and run[-1] == (
      "--command=cd lamaml_jax && python3 -m lamaml_jax.main --method=lamaml "
      "--dataset=cifar100 --workdir=runs/r")
  assert lines[5] == ("gcloud compute tpus tpu-vm scp --recurse vm:~/lamaml_jax/runs/r "
                      "out --zone=z --worker=0")
  assert lines[6] == "gcloud compute tpus tpu-vm delete vm --zone=z --quiet"
  resumed = tpu_vm.commands([], name="vm", zone="z", accelerator_type="v4-8",
                            version="img", run_name="r", fetch_to="out", create=False)
  assert not any("create" in s for s in resumed) and len(resumed) == 5
  # A slice of several hosts: one process per worker, the workdir on a shared mount.
  pod = tpu_vm.commands(["--method=er"], name="vm", zone="z", accelerator_type="v4-16",
                        version="img", run_name="r", fetch_to="out",
                        shared_runs="/mnt/runs/")
  assert pod[4][-1] == ("--command=cd lamaml_jax && python3 -m lamaml_jax.main "
                        "--method=er --workdir=/mnt/runs/r --distributed")
  assert " ".join(pod[5]).startswith("gcloud compute tpus tpu-vm scp --recurse "
                                     "vm:/mnt/runs/r out")
  with pytest.raises(ValueError, match="do not pass --workdir"):
    tpu_vm.commands(["--workdir=w"], name="vm", zone="z", accelerator_type="v4-8",
                    version="img", run_name="r", fetch_to="out")


def test_tpu_vm_cli_dry_run_prints_every_step():
  r = _cli("--name=vm", "--zone=z", "--dry_run", "--", "--method=er", module="launch.tpu_vm")
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert len(lines) == 6 and lines[0].startswith("gcloud compute tpus tpu-vm create vm")
  assert "--workdir=runs/vm" in lines[4]
