"""What every analysis command shares: its flags, configs with overrides, runs
that resume or are reused, a progress line, and JSON + PNG outputs.

Each analysis module defines `run(options, ...) -> data` (runs what is missing,
returns the JSON-able data of its figure), `plot(data, workdir)` (draws the PNGs
from that data alone) and, run as a command, defines its flags (`define_flags`
and its own) and calls `cli_main`: with --plot_only it redraws from the JSON
written before, without running anything.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import types
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
import ml_collections
import numpy as np
import yaml

import configs
from lamaml_jax import cli
from lamaml_jax import io_utils
from lamaml_jax import train

def define_flags() -> types.SimpleNamespace:
  """Defines the common flags and returns their holders. Called by each command
  when it runs (`cli_main`'s caller), so that importing an analysis module
  defines no global flag (tests import several beside other commands)."""
  return types.SimpleNamespace(
      dataset=flags.DEFINE_string("dataset", "mnist5k_rotations", "Benchmark to analyse."),
      setting=flags.DEFINE_enum("setting", None, ["single_pass", "multi_pass"],
                                "Setting; default: the dataset's."),
      workdir=flags.DEFINE_string("workdir", None, "Output directory; default "
                                  "runs/analyses/<analysis>_<dataset>."),
      data_dir=flags.DEFINE_string("data_dir", None, "TFDS data directory."),
      seed=flags.DEFINE_integer("seed", 0, "First seed."),
      num_seeds=flags.DEFINE_integer("num_seeds", 3,
                                     "Seeds seed..seed+N-1 (mean ± std)."),
      methods=flags.DEFINE_list("methods", None,
                                "Methods; default: the analysis's own."),
      override=flags.DEFINE_multi_string(
          "override", [], "KEY=VALUE set in every run's config, e.g. "
          "--override=num_tasks=3 --override=learner.glances=1 (repeatable)."),
      overwrite=flags.DEFINE_bool(
          "overwrite", False, "Delete runs in --workdir made with another config "
          "(e.g. other --override values) and train them afresh."),
      plot_only=flags.DEFINE_bool("plot_only", False,
                                  "Redraw the figure from the JSON already written."),
      compilation_cache_dir=flags.DEFINE_string(
          "compilation_cache_dir", cli.DEFAULT_CACHE_DIR, "JAX's persistent "
          "compilation cache ('' off), as in lamaml_jax.main."))


@dataclasses.dataclass(frozen=True)
class Options:
  """What every analysis is run on (the common flags)."""
  dataset: str = "mnist5k_rotations"
  setting: Optional[str] = None
  workdir: str = "runs/analyses"
  seed: int = 0
  num_seeds: int = 3
  overrides: tuple[str, ...] = ()
  data_dir: Optional[str] = None
  overwrite: bool = False

  @classmethod
  def from_flags(cls, name: str, f: types.SimpleNamespace) -> "Options":
    """From the holders of `define_flags`."""
    return cls(dataset=f.dataset.value, setting=f.setting.value,
               workdir=f.workdir.value or os.path.join(
                   "runs", "analyses", f"{name}_{f.dataset.value}"),
               seed=f.seed.value, num_seeds=f.num_seeds.value,
               overrides=tuple(f.override.value), data_dir=f.data_dir.value,
               overwrite=f.overwrite.value)

  @property
  def seeds(self) -> list[int]:
    return list(range(self.seed, self.seed + self.num_seeds))


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Sets each 'a.b=VALUE' (VALUE read as YAML: 3, 0.1, true, text) in `config`.

  Raises:
    ValueError: an entry without '=', an unknown field or a value of the wrong type.
  """
  for entry in overrides:
    key, sep, text = entry.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"--override {entry!r} must read KEY=VALUE, e.g. num_tasks=3.")
    try:
      set_field(config, key.strip(), yaml.safe_load(text))
    except ValueError as e:
      raise ValueError(f"--override {entry!r}: {e}") from None


def set_field(config: ml_collections.ConfigDict, key: str, value) -> None:
  """config.a.b = value for key 'a.b', type-checked by ml_collections.

  Raises:
    ValueError: no such field, or a value of the wrong type.
  """
  *parents, leaf = key.split(".")
  node = config
  try:
    for name in parents:
      node = node[name]
    if leaf not in node:
      raise KeyError(leaf)
    node[leaf] = value
  except (KeyError, AttributeError):
    raise ValueError(f"the config has no field {key!r} (the fields are listed in any "
                     "run's config.json).") from None
  except TypeError as e:
    raise ValueError(str(e)) from None


def config_for(method: str, options: Options, **fields) -> ml_collections.ConfigDict:
  """configs/<method>.py's cell on the options' benchmark, with `fields` set (e.g.
  grid, probes; dotted keys reach nested fields), seeds from the options, then
  the --override entries."""
  arg = options.dataset + (f",{options.setting}" if options.setting else "")
  config = configs.get_config(method, arg)
  config.seed, config.num_seeds = options.seed, options.num_seeds
  for key, value in fields.items():
    set_field(config, key, value)
  apply_overrides(config, options.overrides)
  return config


_START = time.time()


def progress(message: str) -> None:
  """One progress line on stdout, with the seconds since the command started."""
  print(f"[{time.time() - _START:7.1f} s] {message}", flush=True)


def run(config: ml_collections.ConfigDict, workdir: str,
        options: Optional[Options] = None) -> dict:
  """The results of `config` in `workdir`: read when that run is complete, else
  trained (resuming from its checkpoints, as lamaml_jax.main does); with
  `options.overwrite`, a run of another config there is deleted first.

  Raises:
    train.WorkdirConflictError: `workdir` holds a run of another config.
  """
  options = options or Options()
  try:
    train.check_workdir(config, workdir, overwrite=False)
  except train.WorkdirConflictError:
    if not options.overwrite:
      raise
    progress(f"{workdir}: another config's run, deleted (--overwrite)")
    return train.run(config, workdir, data_dir=options.data_dir, overwrite=True)
  path = os.path.join(workdir, train.RESULTS_FILE)
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)
    if results.get("status") == "complete":
      progress(f"{workdir}: complete, reused")
      return results
  progress(f"{workdir}: training {config.method} ({_members(config)} members)")
  results = train.run(config, workdir, data_dir=options.data_dir)
  progress(f"{workdir}: done in {results['wall_time_s']:.1f} s")
  return results


def _members(config) -> int:
  grid_points = 1
  for part in filter(None, (p.strip() for p in config.grid.split(";"))):
    grid_points *= len([v for v in part.partition("=")[2].split(",") if v.strip()])
  return config.num_seeds * grid_points


def members(results: dict) -> list[dict]:
  """Every member's result of a run (the run itself when it has one member)."""
  return results.get("members") or [results]


def mean_std(values: Sequence[float]) -> list[Optional[float]]:
  """[mean, sample std] of the finite values ([mean, None] for one, [None, None]
  for none)."""
  values = [float(v) for v in values if v is not None and np.isfinite(v)]
  if not values:
    return [None, None]
  return [float(np.mean(values)),
          float(np.std(values, ddof=1)) if len(values) > 1 else None]


def json_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, f"{name}.json")


def cli_main(name: str, run_fn: Callable[[Options], dict],
             plot_fn: Callable[[dict, str], list[str]], f: types.SimpleNamespace):
  """The `main(argv)` of analysis `name` for absl's app.run; `f` holds the flags
  of `define_flags`."""
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    cli.quiet_libraries()
    options = Options.from_flags(name, f)
    path = json_path(options.workdir, name)
    with cli.exit_on_run_errors():
      if f.plot_only.value:
        if not os.path.exists(path):
          raise ValueError(f"--plot_only: {path} does not exist; run the analysis "
                           "without --plot_only first.")
        with open(path) as handle:
          data = json.load(handle)
      else:
        cli.enable_compilation_cache(f.compilation_cache_dir.value)
        os.makedirs(options.workdir, exist_ok=True)
        data = run_fn(options)
        io_utils.atomic_write_json(path, data)
        progress(f"wrote {path}")
      for png in plot_fn(data, options.workdir):
        progress(f"wrote {png}")
  return main
