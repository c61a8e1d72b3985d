r"""A run on a Cloud TPU VM: create the VM, install this checkout, run the same
command on every worker, fetch the results, and (optionally) delete the VM.

  python -m launch.tpu_vm --name=lamaml-c100 --zone=us-central2-b \
      --accelerator_type=v4-8 [--spot] [--delete] [--dry_run] -- \
      --method=lamaml --dataset=cifar100 --config.num_seeds=4

Every step is a `gcloud compute tpus tpu-vm` command, run in order (the first
failure stops the rest); --dry_run prints them and runs nothing. The checkout
goes over as `git archive HEAD` (commit what you want to run), installed with
`pip install -e .[tpu]`. The run's members are sharded over the VM's TPU chips
(config.member_devices: all of them). Results are fetched from worker 0 into
--fetch_to/<run name>. Rerunning the same command with --skip_create resumes
an interrupted (e.g. preempted spot) run from its checkpoints.

A slice of several hosts (v4-16, ...) runs one process per worker,
`--distributed` (JAX reads the slice's coordinates from the TPU metadata): pass
--shared_runs=DIR, a directory every worker mounts (Filestore, gcsfuse), for the
run's workdir; process 0 writes the outputs there and they are fetched from
worker 0. Without it, each worker's runs/ is its own disk, which suits
single-host types (v4-8, v5litepod-8, ...) only.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import Sequence

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARBALL = "lamaml_jax.tar.gz"
REMOTE_DIR = "lamaml_jax"


def commands(run_args: Sequence[str], *, name: str, zone: str, accelerator_type: str,
             version: str, run_name: str, fetch_to: str, spot: bool = False,
             project: str = "", create: bool = True, delete: bool = False,
             data_dir: str = "", shared_runs: str = "") -> list[list[str]]:
  """The argv of every step, in order (`shared_runs`: see the module's doc)."""
  if any(a.startswith("--workdir") for a in run_args):
    raise ValueError("The run's directory is ~/runs/--run_name on the VM; do not pass "
                     "--workdir.")
  base = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = [f"--zone={zone}"] + ([f"--project={project}"] if project else [])
  ssh = lambda command: base + ["ssh", name, *where, "--worker=all",
                                f"--command={command}"]
  out = []
  if create:
    out.append(base + ["create", name, *where, f"--accelerator-type={accelerator_type}",
                       f"--version={version}"] + (["--spot"] if spot else []))
  tarball = os.path.join(fetch_to, TARBALL)
  out.append(["git", "-C", REPO, "archive", "--format=tar.gz", f"--output={tarball}",
              "HEAD"])
  out.append(base + ["scp", tarball, f"{name}:~/{TARBALL}", *where, "--worker=all"])
  out.append(ssh(f"mkdir -p {REMOTE_DIR} && tar -xzf {TARBALL} -C {REMOTE_DIR} && "
                 f"cd {REMOTE_DIR} && python3 -m pip install -q -e '.[tpu]'"))
  workdir = (f"{shared_runs.rstrip('/')}/{run_name}" if shared_runs
             else f"runs/{run_name}")
  run = ["python3", "-m", "lamaml_jax.main", *run_args, f"--workdir={workdir}"]
  if data_dir:
    run.append(f"--data_dir={data_dir}")
  if shared_runs:
    run.append("--distributed")
  out.append(ssh(f"cd {REMOTE_DIR} && " + " ".join(shlex.quote(a) for a in run)))
  remote = workdir if shared_runs else f"~/{REMOTE_DIR}/{workdir}"
  out.append(base + ["scp", "--recurse", f"{name}:{remote}", fetch_to, *where,
                     "--worker=0"])
  if delete:
    out.append(base + ["delete", name, *where, "--quiet"])
  return out


def main(argv, f):
  v = {k: h.value for k, h in f.items()}
  try:
    steps = commands(argv[1:], name=v["name"], zone=v["zone"],
                     accelerator_type=v["accelerator_type"], version=v["version"],
                     run_name=v["run_name"] or v["name"], fetch_to=v["fetch_to"],
                     spot=v["spot"], project=v["project"], create=not v["skip_create"],
                     delete=v["delete"], data_dir=v["data_dir"],
                     shared_runs=v["shared_runs"])
  except ValueError as e:
    sys.exit(f"error: {e}")
  for step in steps:
    line = " ".join(shlex.quote(a) for a in step)
    if v["dry_run"]:
      print(line)
      continue
    print(f"+ {line}", flush=True)
    os.makedirs(v["fetch_to"], exist_ok=True)
    if subprocess.run(step).returncode:
      sys.exit(f"error: this step failed: {line}")


def _main():
  f = dict(
      name=flags.DEFINE_string("name", None, "TPU VM name.", required=True),
      zone=flags.DEFINE_string("zone", None, "Zone, e.g. us-central2-b.", required=True),
      project=flags.DEFINE_string("project", "", "Cloud project (default: gcloud's)."),
      accelerator_type=flags.DEFINE_string("accelerator_type", "v4-8", "TPU type."),
      version=flags.DEFINE_string("version", "tpu-ubuntu2204-base", "TPU VM image."),
      spot=flags.DEFINE_bool("spot", False, "A spot (preemptible) VM."),
      skip_create=flags.DEFINE_bool("skip_create", False, "Use the existing VM."),
      delete=flags.DEFINE_bool("delete", False, "Delete the VM after fetching."),
      run_name=flags.DEFINE_string("run_name", None, "Run directory name (default "
                                   "--name)."),
      fetch_to=flags.DEFINE_string("fetch_to", "runs", "Local directory of results."),
      data_dir=flags.DEFINE_string("data_dir", "", "TFDS data directory on the VM "
                                   "(e.g. a gs:// bucket)."),
      shared_runs=flags.DEFINE_string(
          "shared_runs", "", "A directory every worker mounts: the run goes there, "
          "--distributed over all workers (a slice of several hosts)."),
      dry_run=flags.DEFINE_bool("dry_run", False, "Print the commands; run nothing."))
  app.run(lambda argv: main(argv, f))


if __name__ == "__main__":
  _main()
