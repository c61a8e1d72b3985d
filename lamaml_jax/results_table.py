"""Collects finished runs into a table: mean ± std over seeds per (method,
dataset, setting).

  collect(roots) -> rows      # every results.json below each root
  markdown(rows) -> str       # also csv(rows), write(rows, out_dir)

Each results.json is one process's run (one seed, or several members); a run
directory may also hold `process_time.json` ({"wall_s": ...}, written by
whoever launched the process and timed it from outside), which then stands for
the run's wall time instead of the in-process `wall_time_s`. Sweep launchers add
their own fields to a run's results and group by them with `keys`.
"""
from __future__ import annotations

import csv as csv_lib
import io
import json
import os
from typing import Iterable, Optional, Sequence, Union

import numpy as np

PROCESS_TIME_FILE = "process_time.json"
METRICS = ("ra", "bti", "forgetting", "la")


def _runs(root: str) -> Iterable[tuple[str, dict]]:
  if not os.path.isdir(root):
    raise ValueError(f"{root} is not a directory of runs.")
  for dirpath, _, files in sorted(os.walk(root)):
    if "results.json" in files:
      with open(os.path.join(dirpath, "results.json")) as f:
        yield dirpath, json.load(f)


def _paper_ra(dirpath: str) -> Optional[float]:
  """The paper's RA (%) that the run's config names (config.json), if any."""
  path = os.path.join(dirpath, "config.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get("paper_ra")


def _members(results: dict) -> list[dict]:
  return results.get("members") or [results]


def _wall(dirpath: str, results: dict) -> float:
  path = os.path.join(dirpath, PROCESS_TIME_FILE)
  if os.path.exists(path):
    with open(path) as f:
      return float(json.load(f)["wall_s"])
  return float(results["wall_time_s"])


def _mean_std(values: Sequence[Optional[float]]) -> Optional[list]:
  values = [v for v in values if v is not None]
  if not values:
    return None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return [float(np.mean(values)), std]


def collect(roots: Union[str, Sequence[str]],
            keys: Sequence[str] = ("method", "dataset", "setting")) -> list[dict]:
  """One row per distinct `keys`, over the complete members of the runs below
  `roots` (a directory or several).

  Returns:
    [{key: value, ..., 'seeds': [...], 'runs': n, metric: [mean, std] or None,
      'wall_s': [mean, std], 'paper_ra': % or None}], sorted by `keys`. std is
    None for one seed; a metric that is null in every run (e.g. BTI on the IID
    stream) is None; paper_ra is the figure the runs' config names.

  Raises:
    ValueError: a root that is not a directory.
  """
  groups: dict = {}
  for root in [roots] if isinstance(roots, str) else roots:
    for dirpath, results in _runs(root):
      wall = _wall(dirpath, results)
      for member in _members(results):
        if member.get("status") != "complete":
          continue
        group = tuple(member.get(k, results.get(k)) for k in keys)
        entry = groups.setdefault(group, {"seeds": [], "walls": [], "metrics": [],
                                          "paper_ra": None})
        entry["seeds"].append(member["seed"])
        entry["walls"].append(wall)
        entry["metrics"].append(member)
        if entry["paper_ra"] is None:
          entry["paper_ra"] = _paper_ra(dirpath)
  rows = []
  for group in sorted(groups, key=lambda g: tuple(map(str, g))):
    entry = groups[group]
    row = dict(zip(keys, group))
    row["seeds"] = sorted(entry["seeds"])
    row["runs"] = len(entry["seeds"])
    for m in METRICS:
      row[m] = _mean_std([r.get(m) for r in entry["metrics"]])
    row["wall_s"] = _mean_std(entry["walls"])
    row["paper_ra"] = entry["paper_ra"]
    rows.append(row)
  return rows


def _cell(value: Optional[list], scale: float = 100.0, digits: int = 1) -> str:
  if value is None:
    return "—"
  mean, std = value
  text = f"{mean * scale:.{digits}f}"
  return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def markdown(rows: Sequence[dict], keys: Sequence[str] = ("method", "dataset")) -> str:
  """A Markdown table: RA, BTI and forgetting in %, wall time in s per seed, and
  the paper's RA beside them when a row's config names one."""
  paper = any(row.get("paper_ra") is not None for row in rows)
  head = list(keys) + ["seeds", "RA (%)", "BTI (%)", "forgetting (%)", "wall s"] + (
      ["paper RA (%)"] if paper else [])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in rows:
    cells = [str(row[k]) for k in keys] + [
        str(row["runs"]), _cell(row["ra"]), _cell(row["bti"]),
        _cell(row["forgetting"]), _cell(row["wall_s"], 1.0, 1)]
    if paper:
      cells.append("—" if row.get("paper_ra") is None else f"{row['paper_ra']:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def csv(rows: Sequence[dict], keys: Sequence[str] = ("method", "dataset", "setting")
        ) -> str:
  """The rows as CSV: keys, seeds, each metric's mean and std (fractions), wall
  time per seed, the paper's RA (%); empty cells where undefined."""
  head = list(keys) + ["seeds"] + [f"{m}_{s}" for m in METRICS + ("wall_s",)
                                   for s in ("mean", "std")] + ["paper_ra"]
  out = io.StringIO()
  writer = csv_lib.writer(out, lineterminator="\n")
  writer.writerow(head)
  for row in rows:
    values = [row.get(k) for k in keys] + [" ".join(map(str, row["seeds"]))]
    for m in METRICS + ("wall_s",):
      values += list(row.get(m) or (None, None))
    values.append(row.get("paper_ra"))
    writer.writerow(["" if v is None else v for v in values])
  return out.getvalue()


def write(rows: Sequence[dict], out_dir: str,
          keys: Sequence[str] = ("method", "dataset", "setting"),
          shown: Optional[Sequence[str]] = None) -> str:
  """Writes table.md (with the `shown` keys, default all), table.csv and
  table.json to `out_dir`; returns the Markdown."""
  table = markdown(rows, shown or keys)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "table.md"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(out_dir, "table.csv"), "w") as f:
    f.write(csv(rows, keys))
  with open(os.path.join(out_dir, "table.json"), "w") as f:
    json.dump(rows, f, indent=1)
  return table
