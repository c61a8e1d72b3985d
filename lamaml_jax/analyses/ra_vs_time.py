r"""RA against running time (appendix F, Figure 7).

  python -m lamaml_jax.analyses.ra_vs_time --dataset=mnist5k_rotations \
      [--methods=online,er,...] [--num_seeds=3] [--table=DIR] [--plot_only]

Every method's RA against its wall time per seed on one benchmark. The runs are
the methods table's (`benchmarks/methods_table.py`: one process per method and
seed with the method's cell, timed from outside), in --table (default
<workdir>/runs; point it at an existing table to reuse its runs): the ones
missing are run first, complete ones are reused. --override entries reach each
run as --config.KEY=VALUE. Writes ra_vs_time.json and ra_vs_time.png.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags

from lamaml_jax import learners
from lamaml_jax import results_table
from lamaml_jax.analyses import common
from lamaml_jax.analyses import figures

NAME = "ra_vs_time"
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_METHODS_TABLE = os.path.join(_ROOT, "benchmarks", "methods_table.py")


def run(options: common.Options, methods: Sequence[str] = learners.METHODS,
        table: Optional[str] = None) -> dict:
  """Completes the methods table's runs of `methods` on the options' benchmark,
  then returns {'rows': [{'method', 'ra', 'bti', 'wall_s', 'seeds'}], ...}."""
  if options.setting:
    raise ValueError("ra_vs_time runs each method's default setting of the dataset "
                     "(the methods table's); drop --setting.")
  table = table or os.path.join(options.workdir, "runs")
  seeds = f"{options.seeds[0]}-{options.seeds[-1]}"
  command = [sys.executable, _METHODS_TABLE, f"--methods={','.join(methods)}",
             f"--datasets={options.dataset}", f"--seeds={seeds}", f"--out={table}", "--"]
  command += [f"--config.{entry}" for entry in options.overrides]
  if options.overwrite:
    command.append("--overwrite")  # reaches the runs the table starts
  if options.data_dir:
    command.append(f"--data_dir={options.data_dir}")
  common.progress(f"methods table of {len(methods)} methods x {len(options.seeds)} "
                  f"seeds in {table}")
  done = subprocess.run(command, cwd=_ROOT, check=False)
  if done.returncode:
    raise ValueError(f"The methods table failed (exit {done.returncode}); its output "
                     "above names the run; fix it and rerun (complete runs are kept).")
  rows = [r for r in results_table.collect(table)
          if r["dataset"] == options.dataset and r["method"] in methods
          and set(options.seeds) <= set(r["seeds"])]
  missing = sorted(set(methods) - {r["method"] for r in rows})
  return {"analysis": NAME, "dataset": options.dataset, "seeds": options.seeds,
          "table": table, "missing": missing,
          "rows": [{k: r[k] for k in ("method", "setting", "ra", "bti", "wall_s", "seeds")}
                   for r in rows]}


def plot(data: dict, workdir: str) -> list[str]:
  path = os.path.join(workdir, f"{NAME}.png")
  figures.ra_vs_time(data, path)
  return [path]


def _main():
  f = common.define_flags()
  table = flags.DEFINE_string("table", None, "Directory of the methods table's runs; "
                              "default <workdir>/runs.")
  app.run(common.cli_main(
      NAME, lambda o: run(o, f.methods.value or learners.METHODS, table.value), plot, f))


if __name__ == "__main__":
  _main()
