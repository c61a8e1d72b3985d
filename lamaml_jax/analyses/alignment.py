r"""Inter-task gradient alignment (appendix D, Figure 4).

  python -m lamaml_jax.analyses.alignment --dataset=mnist5k_rotations \
      [--methods=cmaml,lamaml] [--num_seeds=3] [--probe_samples=100] [--plot_only]

Trains each method's cell with the runner's alignment probe on
(`--config.probes=alignment`; `lamaml_jax.alignment`): as each task t >= 3
arrives, the mean pairwise cosine and dot product of the old tasks' gradients,
and of each old task's against task t's, at the current weights. Writes
alignment.json (mean ± std over seeds per arriving task) and alignment.png.
"""
from __future__ import annotations

import os
from typing import Sequence

from absl import app
from absl import flags

from lamaml_jax import alignment as alignment_lib
from lamaml_jax.analyses import common
from lamaml_jax.analyses import figures

NAME = "alignment"
METHODS = ("cmaml", "lamaml")


def run(options: common.Options, methods: Sequence[str] = METHODS,
        probe_samples: int = 100) -> dict:
  """Trains (or reuses) one run per method; returns the figure's data:
  {'methods': {method: {'arriving_task': [t], 'old_cos': [[mean, std]], ...,
  'ra': [mean, std], 'wall_s': s}}, ...}."""
  data = {"analysis": NAME, "dataset": options.dataset, "seeds": options.seeds,
          "probe_samples": probe_samples, "methods": {}}
  for method in methods:
    config = common.config_for(method, options, probes="alignment",
                               probe_samples=probe_samples)
    results = common.run(config, os.path.join(options.workdir, method), options)
    done = [m for m in common.members(results) if m.get("status") == "complete"]
    if not done:
      raise ValueError(f"{method}: no seed finished ({common.members(results)[0]['message']}); "
                       "lower its step sizes with --override.")
    per_seed = [m["alignment"] for m in done]
    entry = {"arriving_task": per_seed[0]["arriving_task"]}
    for name in alignment_lib.NAMES:
      entry[name] = [common.mean_std(values) for values in zip(*(a[name] for a in per_seed))]
    entry["ra"] = common.mean_std([m["ra"] for m in done])
    entry["wall_s"] = results["wall_time_s"]
    data["methods"][method] = entry
  return data


def plot(data: dict, workdir: str) -> list[str]:
  path = os.path.join(workdir, f"{NAME}.png")
  figures.alignment(data, path)
  return [path]


def _main():
  f = common.define_flags()
  probe_samples = flags.DEFINE_integer(
      "probe_samples", 100, "Training samples of each task its gradient is taken on.")
  app.run(common.cli_main(
      NAME, lambda o: run(o, f.methods.value or METHODS, probe_samples.value), plot, f))


if __name__ == "__main__":
  _main()
