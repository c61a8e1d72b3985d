r"""Gathers finished runs into one table: mean ± std over seeds per cell.

  python -m lamaml_jax.collect RUN_DIR [RUN_DIR ...] [--out=DIR] \
      [--by=method,dataset,setting]

Every results.json below the given directories (single runs, members runs,
methods-table and sweep directories alike) counts; members of one run count as
seeds. Prints the Markdown table (`results_table`), with the paper's RA beside a
cell whose config names one, and with --out writes table.md, table.csv and
table.json there.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags

from lamaml_jax import results_table

OUT = flags.DEFINE_string("out", None, "Write table.md, table.csv and table.json here.")
BY = flags.DEFINE_list("by", ["method", "dataset", "setting"],
                       "Fields of results.json (or of its members) that make a cell.")


def main(argv):
  roots = argv[1:]
  if not roots:
    raise app.UsageError("Name at least one directory of runs.")
  try:
    rows = results_table.collect(roots, BY.value)
  except ValueError as e:
    sys.exit(f"error: {e}")
  if not rows:
    sys.exit(f"error: no complete run below {', '.join(roots)}.")
  if OUT.value:
    print(results_table.write(rows, OUT.value, BY.value))
  else:
    print(results_table.markdown(rows, BY.value))


def run_cli() -> None:
  """The `lamaml-jax-collect` entry point."""
  app.run(main)


if __name__ == "__main__":
  run_cli()
