"""The analyses' figures, drawn from their JSON data alone (Agg canvas, no pyplot
state; as `lamaml_jax.plots`)."""
from __future__ import annotations

from typing import Sequence

from matplotlib import ticker
import numpy as np

from lamaml_jax import io_utils
from lamaml_jax import plots


def _arrays(pairs: Sequence) -> tuple[np.ndarray, np.ndarray]:
  """[[mean, std], ...] -> (means, stds) with None as NaN (std 0 for one seed)."""
  mean = np.asarray([np.nan if p[0] is None else p[0] for p in pairs], np.float64)
  std = np.asarray([0.0 if p[1] is None else p[1] for p in pairs], np.float64)
  return mean, std


def _plain_log_axis(axis) -> None:
  """Log axis ticked at 1, 2, 5 x 10^k, labelled as plain numbers."""
  axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  axis.set_minor_formatter(ticker.NullFormatter())


def _band(ax, x, pairs, label: str, color) -> None:
  mean, std = _arrays(pairs)
  ax.plot(x, mean, marker="o", markersize=3, color=color, label=label)
  ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def alignment(data: dict, path: str) -> None:
  """Figure 4: per method (columns), mean cosine (top) and dot product (bottom)
  among the old tasks' gradients and between old and arriving tasks, ± std over
  seeds, against the arriving task."""
  methods = list(data["methods"])
  fig = plots._new_figure((4.0 * len(methods), 6.0))  # pylint: disable=protected-access
  axes = fig.subplots(2, len(methods), squeeze=False, sharex=True)
  for col, method in enumerate(methods):
    d = data["methods"][method]
    x = d["arriving_task"]
    for row, kind in enumerate(("cos", "dot")):
      ax = axes[row, col]
      _band(ax, x, d[f"old_{kind}"], "among old tasks 1..t-1", "tab:blue")
      _band(ax, x, d[f"new_{kind}"], "old tasks vs task t", "tab:orange")
      ax.axhline(0.0, color="grey", linewidth=0.6)
      ax.grid(alpha=0.3)
      if row == 0:
        ax.set_title(f"{method}: gradient alignment")
      ax.set_ylabel("mean cosine similarity" if kind == "cos" else "mean dot product")
    axes[1, col].set_xlabel("arriving task t")
    axes[1, col].xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes[0, 0].legend(fontsize=8)
  fig.suptitle(f"{data['dataset']}, {len(data['seeds'])} seeds, "
               f"{data['probe_samples']} samples per task", fontsize=10)
  io_utils.atomic_savefig(fig, path, dpi=100)


def lr_sweeps(data: dict, path: str) -> None:
  """Figure 5: RA (± std over seeds) against each learning rate, the others
  fixed; one panel per method, one line per hyperparameter, log x."""
  methods = list(dict.fromkeys(s["method"] for s in data["sweeps"]))
  fig = plots._new_figure((4.0 * len(methods), 3.6))  # pylint: disable=protected-access
  axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
  for ax, method in zip(axes, methods):
    for i, sweep in enumerate(s for s in data["sweeps"] if s["method"] == method):
      mean, std = _arrays(sweep["ra"])
      fixed = ", ".join(f"{k}={v:g}" for k, v in sweep["fixed"].items())
      ax.errorbar(sweep["values"], 100 * mean, yerr=100 * std, marker="o", markersize=3,
                  capsize=2, color=f"C{i}", label=f"{sweep['symbol']} ({sweep['name']}; "
                  f"{fixed})")
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis)
    ax.set_title(method)
    ax.set_xlabel("learning rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  axes[0].set_ylabel("RA (%)")
  fig.suptitle(f"RA against learning rates, {data['dataset']}, "
               f"{len(data['seeds'])} seeds", fontsize=10)
  io_utils.atomic_savefig(fig, path, dpi=100)


def lr_grids(data: dict, path: str) -> None:
  """Figure 6: heatmaps of RA (mean over seeds) over each 2-D grid."""
  grids = data["grids"]
  fig = plots._new_figure((4.6 * len(grids), 4.2))  # pylint: disable=protected-access
  axes = fig.subplots(1, len(grids), squeeze=False)[0]
  means = [100 * np.asarray([[np.nan if c[0] is None else c[0] for c in row]
                             for row in grid["ra"]], np.float64) for grid in grids]
  finite = np.concatenate([m[np.isfinite(m)] for m in means] + [np.zeros(0)])
  # One colour scale for every panel, so that robustness compares across methods.
  vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 100.0)
  for ax, grid, mean in zip(axes, grids, means):
    im = ax.imshow(mean, origin="lower", cmap="viridis", interpolation="nearest",
                   vmin=vmin, vmax=vmax)
    labels = [f"{v:g}" for v in grid["values"]]
    ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel(f"{grid['symbols'][1]} ({grid['cols']})")
    ax.set_ylabel(f"{grid['symbols'][0]} ({grid['rows']})")
    ax.set_title(grid["method"])
    for (i, j), v in np.ndenumerate(mean):
      if np.isfinite(v):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                color="black" if v > (vmin + vmax) / 2 else "white")
    fig.colorbar(im, ax=ax, label="RA (%)")
  fig.suptitle(f"RA over 2-D learning-rate grids, {data['dataset']}, "
               f"{len(data['seeds'])} seeds", fontsize=10)
  io_utils.atomic_savefig(fig, path, dpi=100)


def ra_vs_time(data: dict, path: str) -> None:
  """Figure 7: RA against wall time per seed, ± std over seeds, one point per
  method (log time)."""
  fig = plots._new_figure((6.5, 4.5))  # pylint: disable=protected-access
  ax = fig.add_subplot()
  for i, row in enumerate(data["rows"]):
    (ra,), (ra_std,) = _arrays([row["ra"]])
    (wall,), (wall_std,) = _arrays([row["wall_s"]])
    ax.errorbar([wall], [100 * ra], xerr=[wall_std], yerr=[100 * ra_std], marker="o",
                capsize=2, color=f"C{i % 10}", label=row["method"])
    ax.annotate(row["method"], (wall, 100 * ra), textcoords="offset points",
                xytext=(4, 4), fontsize=8)
  ax.set_xscale("log")
  _plain_log_axis(ax.xaxis)
  ax.set_xlabel("wall time per seed (s, whole process)")
  ax.set_ylabel("RA (%)")
  ax.grid(alpha=0.3)
  ax.set_title(f"RA against running time, {data['dataset']}, "
               f"{len(data['seeds'])} seeds", fontsize=10)
  io_utils.atomic_savefig(fig, path, dpi=100)


def quirks(data: dict, path: str) -> None:
  """ΔRA (percentage points, mean ± std of the per-seed differences) of each
  official quirk against the method's correct defaults, one bar per setting."""
  labels, deltas, errors, colors = [], [], [], []
  for i, (method, rows) in enumerate(data["methods"].items()):
    for row in rows[1:]:
      (mean,), (std,) = _arrays([row["delta_ra"]])
      labels.append(f"{method}: {row['setting']}")
      deltas.append(100 * mean)
      errors.append(100 * std)
      colors.append(f"C{i % 10}")
  fig = plots._new_figure((8.0, 1.2 + 0.28 * max(len(labels), 1)))  # pylint: disable=protected-access
  ax = fig.add_subplot()
  y = np.arange(len(labels))[::-1]
  ax.barh(y, deltas, xerr=errors, color=colors, capsize=2)
  ax.set_yticks(y, labels, fontsize=7)
  ax.axvline(0.0, color="grey", linewidth=0.6)
  ax.set_xlabel("RA change from the correct defaults (percentage points)")
  ax.grid(axis="x", alpha=0.3)
  ax.set_title(f"The official code's quirks, {data['dataset']}, "
               f"{len(data['seeds'])} seeds", fontsize=10)
  io_utils.atomic_savefig(fig, path, dpi=100)
