"""Where a run's wall time goes: named phases, timed on the host.

  timeline = Timeline()
  with timeline.span("evaluate"):
    ...
  timeline.phases()  # [{"phase", "seconds", "calls", "first_at_s"}], in order met

`train.run(..., timeline=...)` records its phases into one (benchmarks/
run_timeline.py prints them); without one it uses `NO_TIMELINE`, whose spans do
nothing. Spans are host wall time: a span that ends by reading a device result
(a program's metrics, an accuracy row) includes the device work it waited for,
and one that only dispatches does not. Spans may nest; each phase's seconds are
its own total, so nested phases are counted again in their parents.
Each span is also a `jax.profiler.TraceAnnotation`, so a profiler trace taken
around the run shows the same names.
"""
from __future__ import annotations

import contextlib
import statistics
import subprocess
import time
from typing import Callable, Iterator, Sequence

import jax

from lamaml_jax import io_utils

# Phases that run beside the others (in a thread, or on the host beside a
# dispatched program that it would otherwise wait for), so they are not in the sum.
BACKGROUND_PHASES = ("compile_train_program", "load_beside_program")


class Timeline:
  """Accumulates the wall time of named spans, relative to its creation."""

  def __init__(self, origin: float | None = None):
    """`origin`: a `time.perf_counter()` reading to count `first_at_s` from
    (default: now)."""
    self.origin = time.perf_counter() if origin is None else origin
    self._phases: dict[str, dict] = {}

  @contextlib.contextmanager
  def span(self, name: str) -> Iterator[None]:
    began = time.perf_counter()
    phase = self._phase(name, began)  # listed where it starts, before nested ones
    try:
      with jax.profiler.TraceAnnotation(name):
        yield
    finally:
      phase["seconds"] += time.perf_counter() - began
      phase["calls"] += 1

  def add(self, name: str, seconds: float, began: float | None = None) -> None:
    """Adds a span measured elsewhere (`began`: its perf_counter start)."""
    phase = self._phase(name, time.perf_counter() - seconds if began is None else began)
    phase["seconds"] += seconds
    phase["calls"] += 1

  def _phase(self, name: str, began: float) -> dict:
    return self._phases.setdefault(name, {
        "phase": name, "seconds": 0.0, "calls": 0,
        "first_at_s": round(began - self.origin, 3)})

  def phases(self) -> list[dict]:
    """Each phase once, in the order first met, seconds rounded to ms."""
    return [dict(p, seconds=round(p["seconds"], 3)) for p in self._phases.values()]

  def write(self, path: str) -> None:
    """{"phases": phases(), "total_s": seconds since the origin} as JSON."""
    io_utils.atomic_write_json(path, {
        "phases": self.phases(),
        "total_s": round(time.perf_counter() - self.origin, 3)})


class _NoTimeline:
  """A timeline that records nothing (the default of `train.run`)."""

  @contextlib.contextmanager
  def span(self, name: str) -> Iterator[None]:
    del name
    yield

  def add(self, name: str, seconds: float, began: float | None = None) -> None:
    del name, seconds, began

  def phases(self) -> list[dict]:
    return []


NO_TIMELINE = _NoTimeline()


def breakdown(trials: list[dict]) -> dict:
  """Median seconds per phase over timed processes, with two derived rows.

  `trials`: each a written timeline plus "process_wall_s" (the process's wall
  time measured from outside). Rows: each phase (median seconds, calls per
  run, whether it ran in the background), then "other" (the run's time no
  foreground phase covers) and "interpreter_and_exit" (process wall time less
  the timeline's total).
  """
  names = []
  for t in trials:
    names += [p["phase"] for p in t["phases"] if p["phase"] not in names]
  rows = []
  for name in names:
    found = [next((p for p in t["phases"] if p["phase"] == name), None) for t in trials]
    rows.append({"phase": name, "background": name in BACKGROUND_PHASES,
                 "seconds": statistics.median(p["seconds"] if p else 0.0 for p in found),
                 "calls": max(p["calls"] if p else 0 for p in found)})
  other = statistics.median(
      t["total_s"] - sum(p["seconds"] for p in t["phases"] if p["phase"] not in BACKGROUND_PHASES)
      for t in trials)
  rows.append({"phase": "other", "background": False, "seconds": other, "calls": None})
  rows.append({"phase": "interpreter_and_exit", "background": False, "calls": None,
               "seconds": statistics.median(t["process_wall_s"] - t["total_s"]
                                            for t in trials)})
  walls = [t["process_wall_s"] for t in trials]
  return {"phases": [dict(r, seconds=round(r["seconds"], 3)) for r in rows],
          "process_wall_s_median": statistics.median(walls),
          "process_wall_s_trials": walls}


def timed_process(cmd: Sequence[str], cwd: str | None = None,
                  run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                  clock: Callable[[], float] = time.perf_counter) -> float:
  """Wall seconds of the command `cmd` run to completion as a fresh process.

  Raises RuntimeError naming the command, its exit status and the tail of its
  stderr if it fails. `run` and `clock` stand in for `subprocess.run` and
  `time.perf_counter` (tests pass fakes).
  """
  began = clock()
  proc = run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
  wall = clock() - began
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")
  return wall
