r"""Learning-rate robustness (appendix E, Figures 5 and 6).

  python -m lamaml_jax.analyses.lr_robustness --dataset=mnist5k_rotations \
      [--methods=cmaml,sync,lamaml] [--points=7] [--grid_points=5] \
      [--low=0.001] [--high=0.3] [--parts=1d,2d] [--num_seeds=3] [--plot_only]

1-D sweeps (Figure 5) of each learning-rate hyperparameter, the others at the
cell's values, over `points` log-spaced values in [low, high]:
  C-MAML: α (alpha_init) and β (opt_wt);  Sync La-MAML: α0, η (opt_lr), β;
  La-MAML: α0 and η.
2-D grids (Figure 6), `grid_points` per axis: La-MAML α0 × η, C-MAML α × β.

Each sweep is one run of the members machinery (`--config.grid` crossed with the
seeds: one compiled program, one copy of each seed's data), in its own
directory under --workdir, so an interrupted sweep resumes and a finished one is
reused. Writes lr_robustness.json (RA mean ± std over seeds per setting),
lr_robustness_1d.png and lr_robustness_2d.png.
"""
from __future__ import annotations

import os
from typing import Sequence

from absl import app
from absl import flags
import numpy as np

from lamaml_jax.analyses import common
from lamaml_jax.analyses import figures

NAME = "lr_robustness"
SWEEPS = {"cmaml": ("alpha_init", "opt_wt"), "sync": ("alpha_init", "opt_lr", "opt_wt"),
          "lamaml": ("alpha_init", "opt_lr")}
GRIDS = {"lamaml": ("alpha_init", "opt_lr"), "cmaml": ("alpha_init", "opt_wt")}
# The paper's symbols (appendix E).
SYMBOLS = {("cmaml", "alpha_init"): "α", ("cmaml", "opt_wt"): "β",
           ("sync", "alpha_init"): "α0", ("sync", "opt_lr"): "η", ("sync", "opt_wt"): "β",
           ("lamaml", "alpha_init"): "α0", ("lamaml", "opt_lr"): "η"}



def log_values(low: float, high: float, points: int) -> list[float]:
  """`points` values from low to high, evenly spaced in log, to 3 significant
  digits (so that they read well in a grid string and a plot)."""
  if not 0 < low < high or points < 2:
    raise ValueError(f"Need 0 < low < high and points >= 2, got low={low}, "
                     f"high={high}, points={points}.")
  return [float(f"{v:.3g}") for v in np.geomspace(low, high, points)]


def _ra_by_setting(results: dict, names: Sequence[str]) -> dict[tuple, list]:
  """{(value of each name, ...): [RA mean, std]} over the seeds of each setting."""
  out = {}
  for group in results.get("by_setting", []):
    key = tuple(float(group["setting"][n]) for n in names)
    # A single seed's std is NaN in a fresh run's results and null in the
    # results.json a reused run is read from: None either way.
    out[key] = [v if v is not None and np.isfinite(v) else None
                for v in (group.get("mean_std") or {}).get("ra", [None, None])]
  if not out:  # one seed, one setting: the run's own RA
    member = common.members(results)[0]
    key = tuple(float(member[n]) for n in names)
    out[key] = [member.get("ra"), None]
  return out


def _lookup(table: dict, key: tuple) -> list:
  for k, v in table.items():
    if np.allclose(k, key, rtol=1e-9):
      return v
  return [None, None]


def run(options: common.Options, methods: Sequence[str] = tuple(SWEEPS),
        points: int = 7, grid_points: int = 5, low: float = 0.001, high: float = 0.3,
        parts: Sequence[str] = ("1d", "2d")) -> dict:
  """Runs (or reuses) every sweep; returns the figures' data."""
  unknown = sorted(set(methods) - set(SWEEPS))
  if unknown or not set(parts) <= {"1d", "2d"}:
    raise ValueError(f"lr_robustness sweeps methods {', '.join(SWEEPS)} and parts "
                     f"1d, 2d; got methods {list(methods)}, parts {list(parts)}.")
  data = {"analysis": NAME, "dataset": options.dataset, "seeds": options.seeds,
          "low": low, "high": high, "sweeps": [], "grids": []}
  if "1d" in parts:
    values = log_values(low, high, points)
    for method in methods:
      for name in SWEEPS[method]:
        config = common.config_for(method, options,
                                   grid=f"{name}={','.join(map(str, values))}")
        results = common.run(config, os.path.join(options.workdir, f"1d_{method}_{name}"),
                             options)
        table = _ra_by_setting(results, [name])
        data["sweeps"].append({
            "method": method, "name": name, "symbol": SYMBOLS[(method, name)],
            "values": values, "ra": [_lookup(table, (v,)) for v in values],
            "fixed": {n: config.learner[n] for n in SWEEPS[method] if n != name},
            "wall_s": results["wall_time_s"]})
  if "2d" in parts:
    values = log_values(low, high, grid_points)
    for method in methods:
      if method not in GRIDS:
        continue
      rows, cols = GRIDS[method]
      text = ",".join(map(str, values))
      config = common.config_for(method, options, grid=f"{rows}={text};{cols}={text}")
      results = common.run(config, os.path.join(options.workdir, f"2d_{method}"),
                           options)
      table = _ra_by_setting(results, [rows, cols])
      data["grids"].append({
          "method": method, "rows": rows, "cols": cols,
          "symbols": [SYMBOLS[(method, rows)], SYMBOLS[(method, cols)]],
          "values": values,
          "ra": [[_lookup(table, (r, c)) for c in values] for r in values],
          "wall_s": results["wall_time_s"]})
  return data


def plot(data: dict, workdir: str) -> list[str]:
  paths = []
  if data["sweeps"]:
    paths.append(os.path.join(workdir, f"{NAME}_1d.png"))
    figures.lr_sweeps(data, paths[-1])
  if data["grids"]:
    paths.append(os.path.join(workdir, f"{NAME}_2d.png"))
    figures.lr_grids(data, paths[-1])
  return paths


def _main():
  f = common.define_flags()
  points = flags.DEFINE_integer("points", 7, "Values of each 1-D sweep.")
  grid_points = flags.DEFINE_integer("grid_points", 5, "Values per axis of a 2-D grid.")
  low = flags.DEFINE_float("low", 0.001, "Smallest learning rate swept.")
  high = flags.DEFINE_float("high", 0.3, "Largest learning rate swept.")
  parts = flags.DEFINE_list("parts", ["1d", "2d"], "1d (Figure 5), 2d (Figure 6) or both.")
  app.run(common.cli_main(
      NAME, lambda o: run(o, f.methods.value or tuple(SWEEPS), points.value,
                          grid_points.value, low.value, high.value, parts.value),
      plot, f))


if __name__ == "__main__":
  _main()
