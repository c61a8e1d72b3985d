r"""Writes SLURM batch scripts for a grid of paper cells and seeds.

  python -m launch.slurm --methods=lamaml,cmaml --datasets=cifar100 \
      --settings=single_pass,multi_pass --seeds=0-4 --out=jobs --partition=gpu
  bash jobs/submit_all.sh

One script per (method, dataset, setting, seed); each runs
`python -m lamaml_jax.main` with its own --workdir under --runs, so a requeued or
preempted job resumes from its newest checkpoint (the scripts ask for --requeue).
Extra `--config.KEY=VALUE` overrides can follow `--` on the command line.
"""
from __future__ import annotations

import itertools
import os
import shlex
import stat

from absl import app
from absl import flags

import configs
from lamaml_jax import members

METHODS = flags.DEFINE_list("methods", ["lamaml"], "Methods.")
DATASETS = flags.DEFINE_list("datasets", ["cifar100"], "Datasets.")
SETTINGS = flags.DEFINE_list("settings", ["multi_pass"], "Settings.")
SEEDS = flags.DEFINE_string("seeds", "0-4", "Seeds: '0-4' or '0,3,7'.")
OUT = flags.DEFINE_string("out", "jobs", "Directory for the scripts.")
RUNS = flags.DEFINE_string("runs", "runs", "Directory of the runs' workdirs.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.")
PARTITION = flags.DEFINE_string("partition", None, "SLURM partition.")
GPUS = flags.DEFINE_integer("gpus", 1, "GPUs per job (0: CPU only).")
CPUS = flags.DEFINE_integer("cpus", 4, "CPUs per job.")
HOURS = flags.DEFINE_integer("hours", 12, "Time limit in hours.")
SETUP = flags.DEFINE_string("setup", "", "Shell lines run before the job (module load...).")


def job_script(method, dataset, setting, seed, extra, *, runs, data_dir, partition,
               gpus, cpus, hours, setup, repo) -> tuple[str, str]:
  """(job name, script text) of one run."""
  configs.get_config(method, f"{dataset},{setting}")  # fails early on a cell that does not exist
  name = f"{method}_{dataset}_{setting}_seed{seed}"
  args = ["python", "-m", "lamaml_jax.main",
          f"--method={method}", f"--dataset={dataset}", f"--setting={setting}",
          f"--seed={seed}", f"--workdir={os.path.join(runs, name)}"]
  if data_dir:
    args.append(f"--data_dir={data_dir}")
  args += list(extra)
  lines = ["#!/bin/bash", f"#SBATCH --job-name={name}",
           f"#SBATCH --output={os.path.join(runs, name)}.%j.log",
           f"#SBATCH --cpus-per-task={cpus}", f"#SBATCH --time={hours}:00:00",
           "#SBATCH --requeue"]
  if partition:
    lines.append(f"#SBATCH --partition={partition}")
  if gpus:
    lines.append(f"#SBATCH --gres=gpu:{gpus}")
  lines += ["set -euo pipefail", f"cd {shlex.quote(repo)}"]
  if setup:
    lines.append(setup)
  lines.append(" ".join(shlex.quote(a) for a in args))
  return name, "\n".join(lines) + "\n"


def main(argv):
  extra = [a for a in argv[1:] if a.startswith("--config.")]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  os.makedirs(OUT.value, exist_ok=True)
  names = []
  for method, dataset, setting, seed in itertools.product(
      METHODS.value, DATASETS.value, SETTINGS.value, members.parse_seeds(SEEDS.value)):
    name, text = job_script(method, dataset, setting, seed, extra, runs=RUNS.value,
                            data_dir=DATA_DIR.value, partition=PARTITION.value,
                            gpus=GPUS.value, cpus=CPUS.value, hours=HOURS.value,
                            setup=SETUP.value, repo=repo)
    path = os.path.join(OUT.value, name + ".sbatch")
    with open(path, "w") as f:
      f.write(text)
    names.append(path)
  submit = os.path.join(OUT.value, "submit_all.sh")
  with open(submit, "w") as f:
    f.write("#!/bin/bash\nset -e\n" + "".join(f"sbatch {shlex.quote(p)}\n" for p in names))
  os.chmod(submit, os.stat(submit).st_mode | stat.S_IXUSR)
  print(f"wrote {len(names)} job scripts and {submit}")


if __name__ == "__main__":
  app.run(main)
