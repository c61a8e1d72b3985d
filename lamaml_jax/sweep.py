r"""Sweeps: methods x datasets x settings, each cell one run of seeds x grid members.

A sweep description is a config file (`configs/sweeps/*.py`, `get_config()`
returning the fields below), shared by this local command and the cluster
launchers (`launch/slurm.py` makes one array task per cell):

  python -m lamaml_jax.sweep --sweep=configs/sweeps/mnist_table.py --workdir=runs/t
  python -m lamaml_jax.sweep --sweep=configs/sweeps/mnist_table.py --list
  python -m lamaml_jax.sweep --sweep=... --workdir=runs/t --cell=3   # one cell

Fields: methods, datasets, settings (comma-separated; settings '' takes each
dataset's default), seeds ('0-4': the members' seeds, consecutive), grid (the
members' hyperparameter grid, `members.parse_grid`), overrides ('KEY=VALUE;...'
set in every cell's config; dotted keys reach learner fields). Any field can be
overridden on the command line, `--sweep.seeds=0-2`. A (method, dataset,
setting) without a paper cell is listed as skipped. Cells run one after another
into <workdir>/<method>_<dataset>_<setting>; a complete cell is reused and an
interrupted one resumes, so rerunning the command finishes a sweep. After the
local run, <workdir>/table.md and table.csv hold mean ± std per cell beside the
paper's figure (`collect`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

from absl import app
from absl import flags
import ml_collections

import configs
from lamaml_jax import cli
from lamaml_jax import learners as methods_lib
from lamaml_jax import members as members_lib
from lamaml_jax import results_table
from lamaml_jax.analyses import common

FIELDS = ("methods", "datasets", "settings", "seeds", "grid", "overrides")


def description(methods: str, datasets: str, settings: str = "", seeds: str = "0",
                grid: str = "", overrides: str = "") -> ml_collections.ConfigDict:
  """A sweep description (what a `configs/sweeps/*.py` file returns)."""
  return ml_collections.ConfigDict(dict(
      methods=methods, datasets=datasets, settings=settings, seeds=seeds, grid=grid,
      overrides=overrides))


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run of a sweep: a paper cell with its members (seeds x grid)."""
  method: str
  dataset: str
  setting: Optional[str]  # None: the dataset's default
  seed: int
  num_seeds: int
  grid: str
  overrides: tuple[str, ...]

  @property
  def name(self) -> str:
    return "_".join([self.method, self.dataset] + ([self.setting] if self.setting else []))

  def paper_config(self) -> ml_collections.ConfigDict:
    """configs/<method>.py's cell (ValueError: the paper has none)."""
    return configs.get_config(
        self.method, self.dataset + (f",{self.setting}" if self.setting else ""))

  def config(self) -> ml_collections.ConfigDict:
    """The cell's run config: the paper cell, its members, the overrides."""
    config = self.paper_config()
    config.seed, config.num_seeds, config.grid = self.seed, self.num_seeds, self.grid
    common.apply_overrides(config, self.overrides)
    return config

  def command(self, workdir: str) -> str:
    """The single-run command that trains this cell (what `run` does)."""
    args = [f"--method={self.method}", f"--dataset={self.dataset}"]
    args += [f"--setting={self.setting}"] if self.setting else []
    args += [f"--seed={self.seed}", f"--config.num_seeds={self.num_seeds}"]
    args += [f"--config.grid='{self.grid}'"] if self.grid else []
    args += [f"--config.{o}" for o in self.overrides]
    return " ".join(["python -m lamaml_jax.main", *args,
                     f"--workdir={os.path.join(workdir, self.name)}"])


def _names(text: str) -> list[str]:
  return [p.strip() for p in (text or "").split(",") if p.strip()]


def cells(sweep: ml_collections.ConfigDict) -> tuple[list[Cell], list[str]]:
  """(cells in order, skipped 'method on dataset (setting): why').

  Raises:
    ValueError: an unknown field, method or dataset, no method or dataset,
      seeds that are not consecutive, or a bad grid or override (checked on
      every cell's config, before anything runs).
  """
  unknown = set(sweep.keys()) - set(FIELDS)
  if unknown:
    raise ValueError(f"Unknown sweep field(s) {', '.join(sorted(unknown))}; the fields "
                     f"are {', '.join(FIELDS)}.")
  methods, datasets = _names(sweep.methods), _names(sweep.datasets)
  if not methods or not datasets:
    raise ValueError("A sweep names at least one method and one dataset.")
  settings = _names(sweep.settings) or [None]
  seeds = members_lib.parse_seeds(str(sweep.seeds))
  if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
    raise ValueError(f"Sweep seeds must be consecutive (a run's members are seeds "
                     f"s..s+n-1), got {sweep.seeds!r}; use e.g. '0-4'.")
  overrides = tuple(o.strip() for o in (sweep.overrides or "").split(";") if o.strip())
  out, skipped = [], []
  for method in methods:
    for dataset in datasets:
      for setting in settings:
        cell = Cell(method, dataset, setting, seeds[0], len(seeds), sweep.grid or "",
                    overrides)
        methods_lib.method(method)  # ValueError naming the valid ones
        try:
          cell.paper_config()
        except ValueError as e:
          if not str(e).startswith(("The paper has no", f"{dataset} is a single-pass")):
            raise  # an unknown dataset or setting
          skipped.append(f"{cell.name}: {str(e).split(';')[0]}")
          continue
        try:
          config = cell.config()
          members_lib.parse_grid(config.grid, methods_lib.method(method).sweepable)
        except ValueError as e:
          raise ValueError(f"{cell.name}: {e}") from None
        out.append(cell)
  return out, skipped


def run(sweep: ml_collections.ConfigDict, workdir: str, cell: Optional[int] = None, *,
        data_dir: Optional[str] = None, overwrite: bool = False) -> list[dict]:
  """Runs (or reuses) every cell, or only cell number `cell`; returns results."""
  todo, skipped = cells(sweep)
  for line in skipped:
    common.progress(f"skipped {line}")
  if cell is not None:
    if not 0 <= cell < len(todo):
      raise ValueError(f"--cell={cell} but the sweep has {len(todo)} cells (0.."
                       f"{len(todo) - 1}); --list shows them.")
    todo = [todo[cell]]
  options = common.Options(data_dir=data_dir, overwrite=overwrite)
  out = []
  for i, c in enumerate(todo):
    common.progress(f"cell {i + 1}/{len(todo)}: {c.name}")
    out.append(common.run(c.config(), os.path.join(workdir, c.name), options))
  return out


def _main():
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  sweep = config_flags.DEFINE_config_file(
      "sweep", None, "Sweep description file (configs/sweeps/*.py); override its "
      "fields with --sweep.FIELD=VALUE.", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Directory of the cells' runs.")
  cell = flags.DEFINE_integer("cell", None, "Run only this cell (0-based; a job "
                              "array's task id). Default: every cell, in order.")
  listing = flags.DEFINE_bool("list", False, "Print the cells and their commands; "
                              "run nothing.")
  data_dir = flags.DEFINE_string("data_dir", None, "TFDS data directory.")
  overwrite = flags.DEFINE_bool("overwrite", False, "Retrain a cell whose workdir "
                                "holds a run of another config.")
  cache = flags.DEFINE_string("compilation_cache_dir", cli.DEFAULT_CACHE_DIR,
                              "JAX's persistent compilation cache ('' off).")
  flags.mark_flags_as_required(["sweep"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    cli.quiet_libraries()
    with cli.exit_on_run_errors():
      if listing.value:
        todo, skipped = cells(sweep.value)
        for i, c in enumerate(todo):
          print(f"{i:3d} {c.name}: {c.command(workdir.value or 'runs')}")
        for line in skipped:
          print(f"  - skipped {line}")
        return
      if not workdir.value:
        raise app.UsageError("--workdir is required to run a sweep.")
      cli.enable_compilation_cache(cache.value)
      run(sweep.value, workdir.value, cell.value, data_dir=data_dir.value,
          overwrite=overwrite.value)
      if cell.value is None:
        rows = results_table.collect([workdir.value])
        common.progress(results_table.write(rows, workdir.value))
  app.run(main)


def run_cli() -> None:
  """The `lamaml-jax-sweep` entry point."""
  _main()


if __name__ == "__main__":
  _main()
