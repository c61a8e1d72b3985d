"""PNG plots of an accuracy matrix, drawn on the Agg canvas without pyplot.

Figures are plain `matplotlib.figure.Figure`s bound to `FigureCanvasAgg`, so no
global pyplot state (current figure, backend choice) is touched or leaked. Rows of
`R` that are not filled yet (NaN, an incomplete run) are left blank.
"""
from __future__ import annotations

from typing import Optional

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
import numpy as np

from lamaml_jax import io_utils

# Beyond this many tasks, cell values and the legend are unreadable and omitted.
_MAX_ANNOTATED_TASKS = 20


def _check_matrix(R) -> np.ndarray:
  R = np.asarray(R, dtype=np.float64)
  if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
    raise ValueError(f"Accuracy matrix must be square (T x T), got shape {R.shape}.")
  return R


def _value_range(*arrays) -> tuple[float, str]:
  """(vmax, format): fractions in [0, 1] or percentages in [0, 100]."""
  finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
  if finite.size == 0 or finite.max() <= 1.0:
    return 1.0, "{:.2f}"
  return 100.0, "{:.1f}"


def _new_figure(figsize) -> Figure:
  fig = Figure(figsize=figsize, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _heatmap_figure(width: float, height: float):
  """(figure, square heatmap axes, colorbar axes) placed by fixed margins in inches.

  A layout engine would measure every cell's text in an extra drawing pass
  (a third of the saving time of a 20-task matrix; BUILD.md).
  """
  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  left, bottom, top, gap, bar, right = 0.75, 0.7, 0.5, 0.2, 0.25, 0.85  # inches
  size = min(height - bottom - top, width - left - gap - bar - right)
  ax = fig.add_axes((left / width, bottom / height, size / width, size / height))
  cax = fig.add_axes(((left + size + gap) / width, bottom / height, bar / width,
                      size / height))
  return fig, ax, cax


def plot_accuracy_matrix(R, path, title: str = "Accuracy matrix") -> None:
  """Heatmap of R[i, j] with the values written in the cells, saved as a PNG.

  Args:
    R: [T, T] accuracy matrix (fractions or percentages); NaN cells stay blank.
    path: output file; written atomically.
    title: figure title.
  """
  R = _check_matrix(R)
  t = R.shape[0]
  vmax, fmt = _value_range(R)
  side = float(np.clip(0.55 * t + 1.5, 4.0, 16.0))
  fig, ax, cax = _heatmap_figure(side + 1.0, side)
  im = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", vmin=0.0, vmax=vmax,
                 origin="upper", interpolation="nearest")
  fig.colorbar(im, cax=cax, label="accuracy")
  ax.set_xlabel("evaluated on task j")
  ax.set_ylabel("after training task i")
  # Centred on the figure, shrunk to fit it (about 0.085 in per character at 12 pt).
  fig.suptitle(title, y=1.0 - 0.12 / side, va="top",
               fontsize=min(12.0, 12.0 * (side + 0.8) / (0.085 * max(len(title), 1))))
  for axis in (ax.xaxis, ax.yaxis):
    axis.set_major_locator(MaxNLocator(nbins=min(t, 20), integer=True))
  if t <= _MAX_ANNOTATED_TASKS:
    fontsize = 9 if t <= 10 else 6
    for i in range(t):
      for j in range(t):
        if np.isfinite(R[i, j]):
          color = "black" if R[i, j] > 0.6 * vmax else "white"
          ax.text(j, i, fmt.format(R[i, j]), ha="center", va="center",
                  color=color, fontsize=fontsize)
  io_utils.atomic_savefig(fig, path, dpi=100)


def plot_task_accuracies(R, path, title: str = "Accuracy per task",
                         b: Optional[np.ndarray] = None) -> None:
  """Accuracy on each task j as training proceeds through tasks i = 0..T-1.

  One line per task j: solid from i = j (when the task is learned) onwards, thin and
  dashed before it. If `b` (untrained accuracies) is given, each line starts with
  an extra point at x = -1, labelled "init".

  Args:
    R: [T, T] accuracy matrix; NaN rows (tasks not reached yet) leave gaps.
    path: output PNG; written atomically.
    title: figure title.
    b: optional [T] accuracies of the untrained model.
  """
  R = _check_matrix(R)
  t = R.shape[0]
  if b is not None:
    b = np.asarray(b, dtype=np.float64)
    if b.shape != (t,):
      raise ValueError(f"b must have shape ({t},), got {b.shape}.")
  vmax, _ = _value_range(R, *(() if b is None else (b,)))
  fig = _new_figure((8.0, 5.0))
  ax = fig.add_subplot()
  colors = _task_colors(t)
  xs = np.arange(t)
  for j in range(t):
    color = colors[j]
    pre_x, pre_y = xs[:j + 1], R[:j + 1, j]
    if b is not None:
      pre_x, pre_y = np.concatenate([[-1], pre_x]), np.concatenate([[b[j]], pre_y])
    if len(pre_x) > 1:
      ax.plot(pre_x, pre_y, color=color, linestyle="--", linewidth=0.8, alpha=0.5)
    ax.plot(xs[j:], R[j:, j], color=color, marker="o", markersize=3,
            linewidth=1.5, label=f"task {j}")
  ax.set_xlabel("after training task i")
  ax.set_ylabel("accuracy on task j")
  ax.set_title(title)
  ax.set_ylim(0.0, vmax * 1.02)
  ax.xaxis.set_major_locator(MaxNLocator(nbins=min(t + 1, 20), integer=True))
  if b is not None:
    ax.set_xlim(-1.3, t - 0.7)
    ticks = [-1] + [x for x in ax.get_xticks() if 0 <= x <= t - 1]
    ax.set_xticks(ticks, ["init" if x == -1 else str(int(x)) for x in ticks])
  ax.grid(alpha=0.3)
  if t <= _MAX_ANNOTATED_TASKS:
    ax.legend(fontsize=7, ncols=2 if t > 10 else 1, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)
  io_utils.atomic_savefig(fig, path, dpi=100)


def _task_colors(t: int):
  cmap = matplotlib.colormaps["tab10" if t <= 10 else "viridis"]
  if t <= 10:
    return [cmap(j) for j in range(t)]
  return [cmap(x) for x in np.linspace(0.0, 0.95, t)]
