r"""The official code's quirks, measured (issue: which differences from the paper
come from the method and which from the code that produced its numbers).

  python -m lamaml_jax.analyses.quirks --dataset=mnist5k_rotations \
      [--methods=lamaml,er,...] [--num_seeds=5] [--plot_only]

For each method, its cell is run with every quirk it carries as an option set
to the correct value ('correct'), with each quirk switched to the official
behaviour alone, and with all of them together ('all official'); RA and BTI,
mean ± std over the seeds (one members run per setting). `QUIRKS` lists them
with the place in the shared BASELINES.md that describes each. Writes
quirks.json, quirks.md (the table) and quirks.png (ΔRA against 'correct').
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from absl import app

import configs
from configs import base as configs_base
from lamaml_jax import io_utils
from lamaml_jax.analyses import common
from lamaml_jax.analyses import figures

NAME = "quirks"


@dataclasses.dataclass(frozen=True)
class Quirk:
  """One behaviour of the official code kept as an option.

  Attributes:
    label: what the official code does, in a few words.
    official: {config key: the official value} (dotted keys: learner fields).
    correct: {config key: the correct value, our default}.
    where: the section of BASELINES.md (or DESIGN.md) that describes it.
  """
  label: str
  official: Mapping[str, Any]
  correct: Mapping[str, Any]
  where: str


def _flag(label: str, key: str, official: Any, correct: Any, where: str) -> Quirk:
  return Quirk(label, {key: official}, {key: correct}, where)


RESERVOIR = _flag("reservoir slot randint(0, age) inclusive",
                  "learner.reservoir_inclusive_randint", True, False, "§0")
WITH_REPLACEMENT = _flag("replay drawn with replacement",
                         "learner.replay_with_replacement", True, False, "§0")
DROP_LAST = _flag("MNIST evaluation skips each task's last sample", "eval_drop_last",
                  True, False, "§0")
REPLAY = (RESERVOIR, WITH_REPLACEMENT)

QUIRKS: dict[str, tuple[Quirk, ...]] = {
    "lamaml": REPLAY, "cmaml": REPLAY, "sync": REPLAY, "laer": REPLAY,
    "er": REPLAY, "mer": REPLAY,
    "online": (),
    "ewc": (Quirk("Fisher: squared batch-mean gradient of 10 samples",
                  {"learner.fisher": "squared_mean_grad", "learner.fisher_samples": 10},
                  {"learner.fisher": "mean_per_sample_square",
                   "learner.fisher_samples": None}, "§8"),),
    "gem": (_flag("one memory pointer for all tasks, never reset",
                  "learner.shared_pointer", True, False, "§2"),),
    "agem": (_flag("task 0 never registered (its memory unused)", "learner.skip_task0",
                   True, False, "§3"),
             _flag("reference: mean of per-task clipped gradients", "learner.agem_ref",
                   "per_task_clipped_mean", "union_mean", "§3"),
             _flag("one memory pointer for all tasks, never reset",
                   "learner.shared_pointer", True, False, "§2")),
    "meta_bgd": REPLAY + (
        _flag("α BGD-learned (stochastic)", "learner.bgd_alpha", "bayesian", "fixed", "§6"),
        _flag("later MC passes replay this call's push", "learner.later_passes_see_push",
              True, False, "§6")),
    "icarl": (_flag("herding on the stored stream", "learner.herd_on", "stream",
                    "task_data", "§4"),
              _flag("a small class shrinks the global m",
                    "learner.shrink_m_to_smallest_class", True, False, "§4")),
    "iid": (_flag("batches of 8 samples from each of 4 random tasks",
                  "iid_tasks_per_batch", 4, 0, "§7"),),
}


def quirks_of(method: str, dataset: str) -> tuple[Quirk, ...]:
  """The quirks measured for `method` on `dataset` (the MNIST evaluation's on the
  single-head MNIST streams, which the official main.py evaluates that way)."""
  if method not in QUIRKS:
    raise ValueError(f"Unknown method {method!r}; quirks are listed for "
                     f"{', '.join(QUIRKS)}.")
  return QUIRKS[method] + ((DROP_LAST,) if dataset in configs_base.MNIST else ())


def settings(quirks: Sequence[Quirk]) -> list[tuple[str, dict]]:
  """[(label, {key: value})]: all correct, each quirk alone, all official."""
  correct = {k: v for q in quirks for k, v in q.correct.items()}
  out = [("correct", correct)]
  out += [(q.label, {**correct, **q.official}) for q in quirks]
  if len(quirks) > 1:
    out.append(("all official", {k: v for q in quirks for k, v in q.official.items()}))
  return out


def run(options: common.Options, methods: Sequence[str] = tuple(QUIRKS)) -> dict:
  """Runs (or reuses) every setting of every method; returns the table's data."""
  data = {"analysis": NAME, "dataset": options.dataset, "seeds": options.seeds,
          "methods": {}}
  for method in methods:
    quirks = quirks_of(method, options.dataset)
    if not configs.has_cell(method, options.dataset):
      common.progress(f"{method}: no cell on {options.dataset}, skipped")
      continue
    rows = []
    for i, (label, fields) in enumerate(settings(quirks)):
      config = common.config_for(method, options, **fields)
      results = common.run(config, os.path.join(options.workdir, method, f"setting{i}"),
                           options)
      done = [m for m in common.members(results) if m.get("status") == "complete"]
      where = next((q.where for q in quirks if q.label == label), "")
      ra = {m["seed"]: m["ra"] for m in done}
      base = rows[0]["ra_per_seed"] if rows else ra
      rows.append({"setting": label, "where": where, "fields": fields,
                   "ra": common.mean_std(list(ra.values())),
                   "bti": common.mean_std([m.get("bti") for m in done]),
                   # Paired over the seeds both finished: the same tasks and
                   # initial weights, so the seed-to-seed spread cancels.
                   "delta_ra": common.mean_std([ra[s] - base[s] for s in ra if s in base]),
                   "ra_per_seed": ra, "seeds_finished": len(done)})
    data["methods"][method] = rows
  return data


def _cell(pair, scale: float = 100.0) -> str:
  mean, std = pair
  if mean is None:
    return "—"
  return f"{scale * mean:.1f}" + (f" ± {scale * std:.1f}" if std is not None else "")


def markdown(data: dict) -> str:
  """The table: RA and BTI (%) of each setting, and RA's change from 'correct'
  (percentage points, mean ± std of the per-seed differences)."""
  lines = ["| method | setting | BASELINES.md | RA (%) | ΔRA (points, paired) | BTI (%) |",
           "|---|---|---|---|---|---|"]
  for method, rows in data["methods"].items():
    for row in rows:
      delta = "" if row["setting"] == "correct" else _signed(row["delta_ra"])
      lines.append(f"| {method} | {row['setting']} | {row['where']} | "
                   f"{_cell(row['ra'])} | {delta} | {_cell(row['bti'])} |")
  return "\n".join(lines)


def _signed(pair) -> str:
  mean, std = pair
  if mean is None:
    return "—"
  return f"{100 * mean:+.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def plot(data: dict, workdir: str) -> list[str]:
  table = os.path.join(workdir, f"{NAME}.md")
  io_utils.atomic_write_text(table, markdown(data) + "\n")
  path = os.path.join(workdir, f"{NAME}.png")
  figures.quirks(data, path)
  return [table, path]


def _main():
  f = common.define_flags()
  app.run(common.cli_main(
      NAME, lambda o: run(o, f.methods.value or tuple(QUIRKS)), plot, f))


if __name__ == "__main__":
  _main()
