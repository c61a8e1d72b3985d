"""Collects finished runs into a table: mean ± std over seeds per (method,
dataset, setting).

  collect(root) -> rows       # every results.json below `root`
  markdown(rows) -> str

Each results.json is one process's run (one seed, or several members); a run
directory may also hold `process_time.json` ({"wall_s": ...}, written by
whoever launched the process and timed it from outside), which then stands for
the run's wall time instead of the in-process `wall_time_s`. Sweep launchers add
their own fields to a run's results and group by them with `keys`.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Optional, Sequence

import numpy as np

PROCESS_TIME_FILE = "process_time.json"
METRICS = ("ra", "bti", "forgetting", "la")


def _runs(root: str) -> Iterable[tuple[str, dict]]:
  for dirpath, _, files in sorted(os.walk(root)):
    if "results.json" in files:
      with open(os.path.join(dirpath, "results.json")) as f:
        yield dirpath, json.load(f)


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


def collect(root: str, keys: Sequence[str] = ("method", "dataset", "setting")
            ) -> list[dict]:
  """One row per distinct `keys`, over the complete members of the runs there.

  Returns:
    [{key: value, ..., 'seeds': [...], 'runs': n, metric: [mean, std] or None,
      'wall_s': [mean, std]}], sorted by `keys`. std is None for one seed; a
    metric that is null in every run (e.g. BTI on the IID stream) is None.
  """
  groups: dict = {}
  for dirpath, results in _runs(root):
    wall = _wall(dirpath, results)
    for member in _members(results):
      if member.get("status") != "complete":
        continue
      group = tuple(member.get(k, results.get(k)) for k in keys)
      entry = groups.setdefault(group, {"seeds": [], "walls": [], "metrics": []})
      entry["seeds"].append(member["seed"])
      entry["walls"].append(wall)
      entry["metrics"].append(member)
  rows = []
  for group in sorted(groups, key=lambda g: tuple(map(str, g))):
    entry = groups[group]
    row = dict(zip(keys, group))
    row["seeds"] = sorted(entry["seeds"])
    row["runs"] = len(entry["seeds"])
    for m in METRICS:
      row[m] = _mean_std([r.get(m) for r in entry["metrics"]])
    row["wall_s"] = _mean_std(entry["walls"])
    rows.append(row)
  return rows


def _cell(value: Optional[list], scale: float = 100.0, digits: int = 1) -> str:
  if value is None:
    return "—"
  mean, std = value
  text = f"{mean * scale:.{digits}f}"
  return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def markdown(rows: Sequence[dict], keys: Sequence[str] = ("method", "dataset")) -> str:
  """A Markdown table: RA, BTI and forgetting in %, wall time in s per seed."""
  head = list(keys) + ["seeds", "RA (%)", "BTI (%)", "forgetting (%)", "wall s"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in rows:
    cells = [str(row[k]) for k in keys] + [
        str(row["runs"]), _cell(row["ra"]), _cell(row["bti"]),
        _cell(row["forgetting"]), _cell(row["wall_s"], 1.0, 1)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
