"""The analysis commands (appendix D-F): each end to end on a tiny configuration,
the plot-only path, and a sweep against separate single-setting runs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import configs
from lamaml_jax import train
from lamaml_jax.analyses import alignment
from lamaml_jax.analyses import common
from lamaml_jax.analyses import lr_robustness
from lamaml_jax.analyses import ra_vs_time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("num_tasks=3", "samples_per_task=40")


def options(tmp_path, **kw) -> common.Options:
  return common.Options(workdir=str(tmp_path), num_seeds=kw.pop("num_seeds", 1),
                        overrides=TINY + kw.pop("overrides", ()), **kw)


def redraws_identically(module: str, workdir, pngs) -> None:
  """`--plot_only` redraws every PNG byte for byte from the JSON alone."""
  before = {p: open(p, "rb").read() for p in pngs}
  for p in pngs:
    os.remove(p)
  r = subprocess.run([sys.executable, "-m", f"lamaml_jax.analyses.{module}",
                      "--plot_only", f"--workdir={workdir}"], cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert {p: open(p, "rb").read() for p in pngs} == before


def test_log_values_span_the_range_geometrically():
  v = lr_robustness.log_values(0.001, 0.3, 7)
  assert v[0] == 0.001 and v[-1] == 0.3 and len(v) == 7
  ratios = np.diff(np.log(v))
  np.testing.assert_allclose(ratios, ratios[0], rtol=2e-2)  # 3 significant digits
  with pytest.raises(ValueError, match="0 < low < high"):
    lr_robustness.log_values(0.3, 0.001, 5)


def test_overrides_set_typed_and_nested_fields():
  config = configs.get_config("lamaml", "mnist5k_rotations")
  common.apply_overrides(config, ["num_tasks=3", "learner.alpha_init=0.2",
                                  "probes=alignment"])
  assert config.num_tasks == 3 and config.learner.alpha_init == 0.2
  assert config.probes == "alignment"
  for bad, message in [("num_taks=3", "no field 'num_taks'"), ("num_tasks", "KEY=VALUE"),
                       ("learner.glances=many", "learner.glances")]:
    with pytest.raises(ValueError, match=message):
      common.apply_overrides(config, [bad])


def test_alignment_command_end_to_end(tmp_path):
  data = alignment.run(options(tmp_path, num_seeds=2), methods=("lamaml",),
                       probe_samples=10)
  entry = data["methods"]["lamaml"]
  assert entry["arriving_task"] == [3] and data["seeds"] == [0, 1]
  results = json.load(open(tmp_path / "lamaml" / "results.json"))
  seeds = [m["alignment"]["old_cos"][0] for m in results["members"]]
  assert entry["old_cos"][0] == pytest.approx([np.mean(seeds), np.std(seeds, ddof=1)])
  with open(tmp_path / "alignment.json", "w") as f:
    json.dump(data, f)
  pngs = alignment.plot(data, str(tmp_path))
  assert all(os.path.getsize(p) > 1000 for p in pngs)
  # A finished run is reused, not trained again.
  assert alignment.run(options(tmp_path, num_seeds=2), methods=("lamaml",),
                       probe_samples=10) == data
  redraws_identically("alignment", tmp_path, pngs)
  # Other overrides meet the runs already there: refused with the advice.
  other = options(tmp_path, num_seeds=2, overrides=("learner.glances=1",))
  with pytest.raises(train.WorkdirConflictError, match="--overwrite"):
    alignment.run(other, methods=("lamaml",), probe_samples=10)
  # (--overwrite then trains afresh through train.run's own overwrite, tested there.)


def test_a_sweep_equals_separate_runs_of_each_setting(tmp_path, monkeypatch):
  """C-MAML's α sweep (2 values in one program) against a single-setting run of
  its second value: the same RA, bit for bit. (Its β sweep, the first value's
  run and more seeds are left out: suite time; test_members holds grid members
  equal to separate runs.)"""
  monkeypatch.setitem(lr_robustness.SWEEPS, "cmaml", ("alpha_init",))
  data = lr_robustness.run(options(tmp_path / "sweep"), methods=("cmaml",),
                           points=2, grid_points=2, low=0.01, high=0.1)
  sweep = data["sweeps"][0]
  assert (sweep["method"], sweep["name"], sweep["values"]) == ("cmaml", "alpha_init",
                                                               [0.01, 0.1])
  assert [s["name"] for s in data["sweeps"]] == ["alpha_init"]
  config = common.config_for("cmaml", options(tmp_path))
  config.learner.alpha_init = 0.1
  assert sweep["ra"][1] == [train.run(config, str(tmp_path / "single"))["ra"], None]
  assert sweep["ra"][0][0] != sweep["ra"][1][0]
  grid = data["grids"][0]
  assert (grid["rows"], grid["cols"]) == ("alpha_init", "opt_wt")
  assert np.asarray(grid["ra"], dtype=float).shape == (2, 2, 2)  # rows x cols x [mean, std]
  with open(tmp_path / "sweep" / "lr_robustness.json", "w") as f:
    json.dump(data, f)
  pngs = lr_robustness.plot(data, str(tmp_path / "sweep"))
  assert [os.path.basename(p) for p in pngs] == ["lr_robustness_1d.png",
                                                 "lr_robustness_2d.png"]
  redraws_identically("lr_robustness", tmp_path / "sweep", pngs)


def test_ra_vs_time_runs_the_missing_table_entries(tmp_path):
  table = tmp_path / "runs"
  # A complete run already in the table is reused (the table skips it).
  done = table / "er_mnist5k_rotations_seed0"
  done.mkdir(parents=True)
  (done / "results.json").write_text(json.dumps(
      {"status": "complete", "method": "er", "dataset": "mnist5k_rotations",
       "setting": "single_pass", "seed": 0, "ra": 0.7, "bti": -0.1, "wall_time_s": 3.0}))
  (done / "process_time.json").write_text(json.dumps({"wall_s": 9.0}))
  data = ra_vs_time.run(options(tmp_path), methods=("online", "er"))
  rows = {r["method"]: r for r in data["rows"]}
  assert rows["er"]["ra"] == [0.7, None] and rows["er"]["wall_s"] == [9.0, None]
  online = json.load(open(table / "online_mnist5k_rotations_seed0" / "results.json"))
  assert len(online["accuracy_matrix"]) == 3  # the override reached the run
  assert rows["online"]["ra"] == [online["ra"], None]
  assert data["missing"] == []
  pngs = ra_vs_time.plot(data, str(tmp_path))
  with open(tmp_path / "ra_vs_time.json", "w") as f:
    json.dump(data, f)
  redraws_identically("ra_vs_time", tmp_path, pngs)


def test_plot_only_without_json_says_what_to_do(tmp_path):
  r = subprocess.run([sys.executable, "-m", "lamaml_jax.analyses.alignment",
                      "--plot_only", f"--workdir={tmp_path}"], cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 1
  assert "alignment.json does not exist; run the analysis without --plot_only" in r.stderr


def test_quirk_settings_switch_one_quirk_at_a_time():
  from lamaml_jax.analyses import quirks  # pylint: disable=g-import-not-at-top
  agem = quirks.quirks_of("agem", "mnist5k_rotations")
  assert agem[-1] is quirks.DROP_LAST  # MNIST streams only
  assert quirks.DROP_LAST not in quirks.quirks_of("agem", "mnist5k_split")
  rows = quirks.settings(agem)
  assert [r[0] for r in rows][0] == "correct" and rows[-1][0] == "all official"
  correct, alone, everything = rows[0][1], rows[1][1], rows[-1][1]
  assert correct == {"learner.skip_task0": False, "learner.agem_ref": "union_mean",
                     "learner.shared_pointer": False, "eval_drop_last": False}
  assert {k for k in alone if alone[k] != correct[k]} == {"learner.skip_task0"}
  assert all(everything[k] != correct[k] for k in correct)
  # Every quirk names a real field of that method's config, of the right type.
  for method in quirks.QUIRKS:
    dataset = "mnist5k_split" if method == "icarl" else "mnist5k_rotations"
    for _, fields in quirks.settings(quirks.quirks_of(method, dataset)):
      common.config_for(method, common.Options(dataset=dataset), **fields)


def test_quirks_command_end_to_end(tmp_path):
  from lamaml_jax.analyses import quirks  # pylint: disable=g-import-not-at-top
  data = quirks.run(options(tmp_path, num_seeds=2), methods=("online",))
  online = data["methods"]["online"]
  assert [r["setting"] for r in online] == ["correct", quirks.DROP_LAST.label]
  # Dropping the last of each task's 1,000 test samples lowers its accuracy by 0
  # or 1/1000, and training is unchanged.
  per_seed = lambda i: [json.load(open(tmp_path / "online" / f"setting{i}" /
                                       "results.json"))["members"][s]["accuracy_matrix"]
                        for s in (0, 1)]
  diff = np.asarray(per_seed(0)) - np.asarray(per_seed(1))
  assert np.all(np.isin(np.round(diff * 1000, 6), [0.0, 1.0])) and diff.max() > 0
  with open(tmp_path / "quirks.json", "w") as f:
    json.dump(data, f)
  outputs = quirks.plot(data, str(tmp_path))
  table = open(outputs[0]).read()
  assert "| online | correct | " in table and "| online | MNIST evaluation" in table
  drop = online[1]  # paired over the 2 seeds: each one lowers or keeps RA
  assert drop["delta_ra"][0] <= 0 and len(drop["ra_per_seed"]) == 2
  redraws_identically("quirks", tmp_path, outputs)
