r"""SLURM jobs: a sweep as a job array (one array task per cell), or one run
with its members sharded over a node's GPUs or over several nodes.

  python -m launch.slurm --sweep=configs/sweeps/paper_images.py --runs=runs/images \
      [--sweep.seeds=0-2] --partition=gpu --gpus=1 --hours=24 [--dry_run]
  python -m launch.slurm --runs=runs --gpus=4 --job_name=lamaml_c100 [--dry_run] -- \
      --method=lamaml --dataset=cifar100 --config.num_seeds=8
  python -m launch.slurm --runs=runs --nodes=2 --gpus=4 --job_name=lamaml_c100 -- \
      --method=lamaml --dataset=cifar100 --config.num_seeds=32

A run on one node is one process over the node's GPUs. With --nodes > 1 (or
--process_per_gpu) srun starts one process per GPU on every node, and the run
is `--distributed` (JAX reads its coordinates from SLURM's environment); the
members are sharded over all the job's GPUs and process 0 writes the outputs.
--runs must then be on a file system every node shares.

The script is written to --out and submitted with sbatch; --dry_run prints the
script and the sbatch command instead and submits nothing. Each job asks SLURM
for SIGTERM --grace_seconds before its time limit (`--signal`): the run stops
after its running program with a checkpoint and exits 143, and the job requeues
itself (`scontrol requeue`), so a timed-out or preempted job resumes where it
stopped. Array task i runs `python -m lamaml_jax.sweep --cell=i`; gather the
cells with `python -m lamaml_jax.collect RUNS --out=RUNS`.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERRUPTED = 143  # lamaml_jax.main's exit status after SIGTERM (a checkpoint written)


def _header(name: str, log: str, *, gpus: int, cpus: int, hours: float,
            partition: Optional[str], grace_seconds: int, nodes: int = 1,
            tasks_per_node: int = 1) -> list[str]:
  minutes = max(int(round(hours * 60)), 1)
  lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --output={log}",
           "#SBATCH --open-mode=append",  # a requeued job appends to its log
           f"#SBATCH --nodes={nodes}", f"#SBATCH --ntasks-per-node={tasks_per_node}",
           f"#SBATCH --cpus-per-task={cpus}",
           f"#SBATCH --time={minutes // 60}:{minutes % 60:02d}:00",
           f"#SBATCH --signal=TERM@{grace_seconds}", "#SBATCH --requeue"]
  if partition:
    lines.append(f"#SBATCH --partition={partition}")
  if gpus:
    # Every task sees all of its node's GPUs; JAX gives task i GPU SLURM_LOCALID.
    lines.append(f"#SBATCH --gpus-per-node={gpus}")
  return lines


def _body(command: str, setup: str) -> list[str]:
  lines = ["set -uo pipefail", f"cd {shlex.quote(REPO)} || exit 1"]
  if setup:
    lines.append(setup)
  return lines + [
      "rc=0",
      f"srun {command} || rc=$?",
      f"# {INTERRUPTED}: stopped by the warning signal with a checkpoint; run again.",
      f'if [ "$rc" -eq {INTERRUPTED} ]; then',
      '  scontrol requeue "$SLURM_JOB_ID"',
      "  exit 0",
      "fi",
      'exit "$rc"']


def _quote(args: Sequence[str]) -> str:
  return " ".join(shlex.quote(a) for a in args)


def array_script(sweep_file: str, sweep_args: Sequence[str], num_cells: int, runs: str,
                 *, name: str, data_dir: Optional[str] = None, gpus: int = 1,
                 cpus: int = 4, hours: float = 12, partition: Optional[str] = None,
                 grace_seconds: int = 300, max_parallel: int = 0,
                 setup: str = "") -> str:
  """The job array of a sweep: array task i trains cell i into `runs`.

  `sweep_args` are the --sweep.FIELD=VALUE overrides, passed on unchanged so that
  every task sees the cells the launcher counted.
  """
  if num_cells < 1:
    raise ValueError("The sweep has no cell to run.")
  lines = _header(name, os.path.join(runs, "slurm-%A_%a.log"), gpus=gpus, cpus=cpus,
                  hours=hours, partition=partition, grace_seconds=grace_seconds)
  limit = f"%{max_parallel}" if max_parallel else ""
  lines.insert(2, f"#SBATCH --array=0-{num_cells - 1}{limit}")
  args = ["python", "-m", "lamaml_jax.sweep", f"--sweep={os.path.abspath(sweep_file)}",
          *sweep_args, f"--workdir={runs}"]
  if data_dir:
    args.append(f"--data_dir={data_dir}")
  command = _quote(args) + ' --cell="$SLURM_ARRAY_TASK_ID"'
  return "\n".join(lines + _body(command, setup)) + "\n"


def run_script(run_args: Sequence[str], runs: str, *, name: str,
               data_dir: Optional[str] = None, gpus: int = 1, cpus: int = 4,
               hours: float = 12, partition: Optional[str] = None,
               grace_seconds: int = 300, setup: str = "", nodes: int = 1,
               process_per_gpu: bool = False) -> str:
  """One `lamaml_jax.main` run; its members are sharded over all the job's
  devices (config.member_devices: all of them). On one node (and without
  `process_per_gpu`) one process drives the node's `gpus` GPUs; otherwise one
  process per GPU (one per node without GPUs), `--distributed`."""
  if any(a.startswith("--workdir") for a in run_args):
    raise ValueError("Give the run's directory with --runs and --job_name, not --workdir.")
  if nodes < 1:
    raise ValueError(f"--nodes must be >= 1, got {nodes}.")
  several = nodes > 1 or (process_per_gpu and gpus > 1)
  args = ["python", "-m", "lamaml_jax.main", *run_args,
          f"--workdir={os.path.join(runs, name)}"]
  if data_dir:
    args.append(f"--data_dir={data_dir}")
  if several and "--distributed" not in run_args:
    args.append("--distributed")
  lines = _header(name, os.path.join(runs, f"{name}.%j.log"), gpus=gpus, cpus=cpus,
                  hours=hours, partition=partition, grace_seconds=grace_seconds,
                  nodes=nodes, tasks_per_node=max(gpus, 1) if several else 1)
  return "\n".join(lines + _body(_quote(args), setup)) + "\n"


def submit(script: str, path: str, dry_run: bool) -> None:
  """Writes `script` to `path` and submits it, or (dry run) prints both."""
  command = ["sbatch", path]
  if dry_run:
    print(f"# {path} (not written: --dry_run)\n{script}\n# would run: {_quote(command)}")
    return
  sbatch = shutil.which("sbatch")
  if sbatch is None:
    raise ValueError("sbatch is not on PATH: run this on a SLURM login node, or pass "
                     "--dry_run to see the job.")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write(script)
  subprocess.run([sbatch, path], check=True)


def _main():
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  sweep = config_flags.DEFINE_config_file(
      "sweep", None, "Sweep description (configs/sweeps/*.py): one array task per "
      "cell. Without it, the arguments after -- are one lamaml_jax.main run.")
  f = dict(
      runs=flags.DEFINE_string("runs", "runs", "Directory of the runs' workdirs."),
      out=flags.DEFINE_string("out", "jobs", "Directory the job script goes to."),
      job_name=flags.DEFINE_string("job_name", None, "Job name (default: the sweep "
                                   "file's name; required for a single run)."),
      data_dir=flags.DEFINE_string("data_dir", None, "TFDS data directory."),
      partition=flags.DEFINE_string("partition", None, "SLURM partition."),
      gpus=flags.DEFINE_integer("gpus", 1, "GPUs per job (0: CPU only)."),
      nodes=flags.DEFINE_integer("nodes", 1, "Nodes of a single run's job (one "
                                 "process per GPU, --distributed); a sweep's array "
                                 "tasks take one node each."),
      process_per_gpu=flags.DEFINE_bool(
          "process_per_gpu", False, "On one node too, one process per GPU "
          "(--distributed) instead of one process over all of them."),
      cpus=flags.DEFINE_integer("cpus", 4, "CPUs per job."),
      hours=flags.DEFINE_float("hours", 12, "Time limit in hours."),
      grace=flags.DEFINE_integer("grace_seconds", 300, "SIGTERM this long before the "
                                 "time limit, to checkpoint and requeue."),
      max_parallel=flags.DEFINE_integer("max_parallel", 0, "Array tasks running at "
                                        "once (0: no limit)."),
      setup=flags.DEFINE_string("setup", "", "Shell lines run before the job "
                                "(module load ..., source venv/bin/activate)."),
      dry_run=flags.DEFINE_bool("dry_run", False, "Print the job; submit nothing."))

  def main(argv):
    sys.path.insert(0, REPO)
    from lamaml_jax import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
    v = {k: h.value for k, h in f.items()}
    v["runs"] = os.path.abspath(v["runs"])  # the job runs from the checkout
    if v["nodes"] != 1 and sweep.value is not None:
      raise app.UsageError(
          "--nodes must be 1 with --sweep: each array task is one cell on one node; "
          "for one run over several nodes, give its arguments after -- instead.")
    common = dict(data_dir=v["data_dir"], gpus=v["gpus"], cpus=v["cpus"],
                  hours=v["hours"], partition=v["partition"],
                  grace_seconds=v["grace"], setup=v["setup"])
    try:
      if sweep.value is not None:
        if len(argv) > 1:
          raise app.UsageError(f"Unexpected arguments with --sweep: {argv[1:]}")
        cells, skipped = sweep_lib.cells(sweep.value)
        for line in skipped:
          print(f"# skipped {line}", file=sys.stderr)
        sweep_file = config_flags.get_config_filename(flags.FLAGS["sweep"])
        name = v["job_name"] or os.path.splitext(os.path.basename(sweep_file))[0]
        overrides = [a for a in sys.argv[1:] if a.startswith("--sweep.")]
        script = array_script(sweep_file, overrides, len(cells), v["runs"], name=name,
                              max_parallel=v["max_parallel"], **common)
      else:
        if len(argv) < 2 or not v["job_name"]:
          raise app.UsageError("Give --sweep=FILE, or --job_name and a run's "
                               "arguments after --, e.g. -- --method=lamaml "
                               "--dataset=cifar100.")
        name = v["job_name"]
        script = run_script(argv[1:], v["runs"], name=name, nodes=v["nodes"],
                            process_per_gpu=v["process_per_gpu"], **common)
      submit(script, os.path.join(v["out"], f"{name}.sbatch"), v["dry_run"])
    except ValueError as e:
      sys.exit(f"error: {e}")

  app.run(main)


if __name__ == "__main__":
  _main()
