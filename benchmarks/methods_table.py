r"""RA, BTI, forgetting and wall time of every method on the offline benchmarks.

  python benchmarks/methods_table.py --out=runs/table \
      [--methods=online,er,...] [--datasets=mnist5k_rotations,...] [--seeds=0-2]

Runs every (method, dataset, seed) as its own `python -m lamaml_jax.main`
process with the method's config for that dataset, times the whole process from
outside (written beside its results as process_time.json), skips runs already
complete (rerun the same command to finish an interrupted table), then prints
the table (`lamaml_jax.results_table`, as `python -m lamaml_jax.collect OUT`) and
writes it to OUT/table.md, OUT/table.csv and OUT/table.json. Extra flags for
every run go after `--`, e.g. `-- --config.num_tasks=3`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configs  # pylint: disable=wrong-import-position
from lamaml_jax import learners  # pylint: disable=wrong-import-position
from lamaml_jax import members  # pylint: disable=wrong-import-position
from lamaml_jax import results_table  # pylint: disable=wrong-import-position

OFFLINE = ("mnist5k_rotations", "mnist5k_permutations", "mnist5k_split")
METHODS = flags.DEFINE_list("methods", list(learners.METHODS), "Methods to run.")
DATASETS = flags.DEFINE_list("datasets", list(OFFLINE), "Benchmarks to run.")
SEEDS = flags.DEFINE_string("seeds", "0-2", "Seeds, e.g. 0-2 or 0,3.")
OUT = flags.DEFINE_string("out", "runs/methods_table", "Directory of the runs.")
TIMEOUT = flags.DEFINE_integer("timeout_s", 3600, "Limit of one run.")


def run_one(method: str, dataset: str, seed: int, workdir: str, extra: list[str]) -> None:
  results = os.path.join(workdir, "results.json")
  if os.path.exists(results):
    with open(results) as f:
      if json.load(f).get("status") == "complete":
        return
  command = [sys.executable, "-m", "lamaml_jax.main", f"--method={method}",
             f"--dataset={dataset}", f"--seed={seed}", f"--workdir={workdir}",
             "--compilation_cache_dir=", *extra]
  start = time.perf_counter()
  r = subprocess.run(command, cwd=os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), capture_output=True, text=True,
                     timeout=TIMEOUT.value)
  wall = time.perf_counter() - start
  if r.returncode:
    print(f"{method} {dataset} seed {seed} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
    return
  with open(os.path.join(workdir, results_table.PROCESS_TIME_FILE), "w") as f:
    json.dump({"wall_s": wall, "command": command}, f)
  print(f"{method:>8} {dataset:<22} seed {seed}: {wall:6.1f} s", flush=True)


def main(argv):
  extra = argv[1:]
  for dataset in DATASETS.value:
    for method in METHODS.value:
      if not configs.has_cell(method, dataset):
        print(f"{method:>8} {dataset:<22} no cell: skipped", flush=True)
        continue
      for seed in members.parse_seeds(SEEDS.value):
        run_one(method, dataset, seed,
                os.path.join(OUT.value, f"{method}_{dataset}_seed{seed}"), extra)
  rows = results_table.collect(OUT.value)
  print(results_table.write(rows, OUT.value, shown=("method", "dataset")))


if __name__ == "__main__":
  app.run(main)
