r"""Where a whole run's wall time goes, phase by phase, timed as whole processes.

  python benchmarks/run_timeline.py                     # the default run, cold and warm
  python benchmarks/run_timeline.py --cache=cold --trials=5
  python benchmarks/run_timeline.py --json=out.json -- --method=er --config.num_tasks=5

Each trial runs `python -m lamaml_jax.main --timeline=FILE [FLAGS after --]` in a
fresh process with a fresh workdir, timed from outside; 'cold' gives it an empty
persistent compilation cache, 'warm' one filled by an untimed run of the same
command first. Per phase the table gives the median seconds over the trials and
the calls per run. The phases are `train.run`'s (see `lamaml_jax.timeline`):
`compile_train_program` runs in a background thread beside the phases after it,
and `load_beside_program` (orbax and matplotlib) on the host while a dispatched
task program runs, so neither is in the sum (`load_while_compiling` is the same
load while the host would otherwise wait for the compilation);
`interpreter_and_exit` is the process wall time less the time from main.py's
first line to the end of its run; `other` is the part of
the run no phase covers (the loop's own host work, writer set-up and close).
Compare figures only with ones measured in the same session on the same machine.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from lamaml_jax import timeline as timeline_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

CACHE = flags.DEFINE_enum("cache", "both", ["cold", "warm", "both"],
                          "Persistent compilation cache state of the timed runs.")
TRIALS = flags.DEFINE_integer("trials", 3, "Timed processes per cache state.")
JSON = flags.DEFINE_string("json", None, "Also write the figures here.")

def timed_process(main_flags: list[str], cache_dir: str) -> dict:
  """One run of lamaml_jax.main: its timeline plus the process's wall time."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "timeline.json")
    cmd = [sys.executable, "-m", "lamaml_jax.main", f"--workdir={tmp}/run",
           f"--compilation_cache_dir={cache_dir}", f"--timeline={path}", *main_flags]
    wall = timeline_lib.timed_process(cmd, cwd=ROOT)
    with open(path) as f:
      out = json.load(f)
  out["process_wall_s"] = round(wall, 3)
  return out


def table(name: str, figures: dict) -> str:
  lines = [f"{name}: whole process {figures['process_wall_s_median']:.2f} s (median of "
           f"{', '.join(f'{w:.2f}' for w in figures['process_wall_s_trials'])})",
           f"  {'phase':<28}{'s':>8}{'calls':>7}"]
  for r in figures["phases"]:
    calls = "" if r["calls"] is None else str(r["calls"])
    note = "  (background, overlaps)" if r["background"] else ""
    lines.append(f"  {r['phase']:<28}{r['seconds']:>8.3f}{calls:>7}{note}")
  return "\n".join(lines)


def main(argv):
  main_flags = argv[1:]
  out = {"command": ["python", "-m", "lamaml_jax.main", *main_flags]}
  states = ["cold", "warm"] if CACHE.value == "both" else [CACHE.value]
  for state in states:
    trials = []
    with tempfile.TemporaryDirectory() as warm_cache:
      if state == "warm":
        timed_process(main_flags, warm_cache)  # fills the cache, untimed
      for _ in range(TRIALS.value):
        if state == "warm":
          trials.append(timed_process(main_flags, warm_cache))
        else:
          with tempfile.TemporaryDirectory() as cold_cache:
            trials.append(timed_process(main_flags, cold_cache))
    out[state] = timeline_lib.breakdown(trials)
    print(table(state, out[state]), flush=True)
  if JSON.value:
    with open(JSON.value, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  app.run(main)
