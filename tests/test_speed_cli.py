"""benchmarks/speed.py: the comparison with the official code's timing harness, and
the cold full-run trials."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """For the speed.py processes: CPU, and one compilation cache for both (they
  time the same case)."""
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("xla")),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.3"}


@pytest.fixture(scope="module")
def speed(load_benchmark):
  """benchmarks/speed.py, loaded once: it defines absl flags."""
  return load_benchmark("speed")


def harness_json(**medians):
  """The harness's output format, one result per config letter."""
  return {"env": {}, "results": [
      {"config": c, "median_ms": m, "min_ms": m - 1.0, "description": c}
      for c, m in medians.items()]}


def test_official_figures_map_harness_configs_to_cases(speed):
  got = speed.official_figures(harness_json(e=53.34, a=224.71, z=1.0))
  assert got == {"mnist_fo": {"config": "e", "median_ms": 53.34, "min_ms": 52.34},
                 "cifar_so": {"config": "a", "median_ms": 224.71, "min_ms": 223.71}}
  assert set(speed.OFFICIAL_CONFIGS) <= set(speed.CASES)


def test_comparison_rows_give_the_speed_up(speed):
  rows = speed.comparison_rows(
      {"mnist_fo": {"ms_per_observe_in_program": 5.0},
       "mnist_fo_update": {"ms_per_observe_in_program": 1.0}},
      {"mnist_fo": {"median_ms": 55.0, "min_ms": 50.0}})
  assert len(rows) == 2  # header + the one case with an official figure
  assert rows[1].split() == ["mnist_fo", "5.00", "55.00", "11.0x"]


def test_cli_prints_and_writes_the_comparison_and_times_vmapped_members(tmp_path, env):
  """One process (suite time): a case beside the official figures, and members."""
  official, out = tmp_path / "official.json", tmp_path / "figures.json"
  official.write_text(json.dumps(harness_json(v=50.0)))
  proc = subprocess.run(  # ER's case: the cheapest to compile (suite time)
      [sys.executable, "benchmarks/speed.py", "--cases=mnist_er", "--repeats=2",
       "--trials=1", f"--official_json={official}", f"--json={out}",
       "--members=2,1", "--member_case=mnist_fo_update"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "speed-up" in proc.stdout and "50.00" in proc.stdout
  figures = json.loads(out.read_text())
  assert figures["official"]["mnist_er"]["median_ms"] == 50.0
  assert figures["cases"]["mnist_er"]["ms_per_observe_in_program"] > 0
  members = figures["members"]
  assert set(members) == {"1", "2"}
  one, two = members["1"], members["2"]
  assert one["x_fewest"] == 1.0
  assert two["x_fewest"] == pytest.approx(
      two["ms_per_observe_all_members"] / one["ms_per_observe_all_members"], abs=0.01)
  # ms_per_observe_all_members is rounded to 0.01 ms, the per-member figure to 0.001.
  assert two["ms_per_member_observe"] == pytest.approx(
      two["ms_per_observe_all_members"] / 2, abs=0.004)


def test_cold_full_runs_take_fresh_processes_and_report_fastest_and_median(speed):
  walls = iter([16.2, 14.9, 15.4])
  calls = []

  def fake_run(cmd, **kwargs):
    calls.append(cmd)
    out = next(a for a in cmd if a.startswith("--json=")).split("=", 1)[1]
    with open(out, "w") as f:
      json.dump({"full_run_mnist5k_rotations": {
          "wall_s": next(walls), "ra": 0.74, "meta_updates": 10000}}, f)
    return subprocess.CompletedProcess(cmd, 0, "", "")

  got = speed.cold_full_runs(3, run=fake_run)
  assert got["wall_s"] == 14.9 and got["wall_s_median"] == 15.4
  assert got["wall_s_trials"] == [16.2, 14.9, 15.4]
  assert len(got["process_wall_s_trials"]) == 3 and got["ra"] == 0.74
  for cmd in calls:  # nothing compiled before the run, one run a process
    assert "--cases=" in cmd and "--full_run_trials=1" in cmd and "--full_run" in cmd


def test_cold_full_runs_report_a_failed_process(speed):
  def failing(cmd, **kwargs):
    return subprocess.CompletedProcess(cmd, 1, "", "Traceback: out of memory")

  with pytest.raises(RuntimeError, match="out of memory"):
    speed.cold_full_runs(2, run=failing)


def test_interleaved_comparison_times_both_back_to_back_each_round(speed):
  calls = []
  official_ms = iter([50.0, 100.0, 60.0, 120.0, 40.0, 80.0])
  ours_ms = iter([5.0, 50.0, 5.0, 60.0, 5.0, 40.0])

  def official(case):
    calls.append(("official", speed.OFFICIAL_CONFIGS[case]))
    return next(official_ms)

  def ours(case):
    def time_it():
      calls.append(("ours", case))
      return next(ours_ms)
    return time_it

  got = speed.interleaved_comparison({"mnist_fo": ours("mnist_fo"),
                                      "cifar_so": ours("cifar_so")}, official, rounds=3)
  assert calls[:4] == [("official", "e"), ("ours", "mnist_fo"),
                       ("official", "a"), ("ours", "cifar_so")]
  assert len(calls) == 12
  assert got["mnist_fo"]["speed_up"] == [10.0, 12.0, 8.0]
  assert got["mnist_fo"]["speed_up_median"] == 10.0
  assert got["cifar_so"]["speed_up"] == [2.0, 2.0, 2.0]
  rows = speed.interleaved_rows(got)
  assert rows[1].split()[:4] == ["mnist_fo", "5.00", "50.00", "10.0x"]
  assert "(8.0-12.0x)" in rows[1]


def test_run_official_harness_passes_config_and_reads_its_median(speed):
  seen = []

  def run(argv, **kwargs):
    seen.append(argv)
    path = argv[argv.index("--json") + 1]
    with open(path, "w") as f:
      json.dump(harness_json(a=171.4), f)
    return subprocess.CompletedProcess(argv, 0, "", "")

  assert speed.run_official_harness("py 'bench dir/b.py' repo", "cifar_so",
                                    run=run) == 171.4
  assert seen[0][:6] == ["py", "bench dir/b.py", "repo", "--configs", "a", "--json"]
  failed = lambda argv, **kwargs: subprocess.CompletedProcess(argv, 1, "", "no torch")
  with pytest.raises(RuntimeError, match="no torch"):
    speed.run_official_harness("py b.py repo", "cifar_so", run=failed)


def test_cli_compares_back_to_back_with_a_harness_command(tmp_path, env):
  fake = tmp_path / "fake_harness.py"
  fake.write_text(
      "import argparse, json\n"
      "p = argparse.ArgumentParser(); p.add_argument('repo')\n"
      "p.add_argument('--configs'); p.add_argument('--json')\n"
      "a = p.parse_args()\n"
      "json.dump({'results': [{'config': a.configs, 'median_ms': 50.0,"
      " 'min_ms': 49.0}]}, open(a.json, 'w'))\n")
  out = tmp_path / "figures.json"
  proc = subprocess.run(  # ER's case: the cheapest to compile (suite time)
      [sys.executable, "benchmarks/speed.py", "--cases=mnist_er", "--repeats=2",
       "--trials=1", f"--official_cmd={sys.executable} {fake} checkout",
       "--official_rounds=2", f"--json={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "back to back" in proc.stdout
  got = json.loads(out.read_text())["interleaved"]["mnist_er"]
  assert got["official_ms"] == [50.0, 50.0] and len(got["speed_up"]) == 2
  assert got["speed_up_median"] > 0


def test_whole_processes_are_timed_back_to_back_after_an_untimed_warm_up(speed):
  # Each process "takes" the next of these seconds on a fake clock.
  seconds = iter([9.0,                   # the untimed run filling the warm cache
                  300.0, 30.0, 20.0,     # round 1: official, ours cold, ours warm
                  330.0, 33.0, 30.0])    # round 2
  calls, now = [], [0.0]

  def fake_run(cmd, cwd=None, **kwargs):
    calls.append((cmd, cwd))
    now[0] += next(seconds)
    return subprocess.CompletedProcess(cmd, 0, "", "")

  got = speed.whole_process_comparison("off/python main.py --seed 0", 2,
                                       main_flags=["--method=er"], run=fake_run,
                                       clock=lambda: now[0])
  assert got["official_s"] == [300.0, 330.0]
  assert got["cold_s"] == [30.0, 33.0] and got["warm_s"] == [20.0, 30.0]
  assert got["cold_speed_up"] == [10.0, 10.0] and got["cold_speed_up_median"] == 10.0
  assert got["warm_speed_up"] == [15.0, 11.0] and got["warm_speed_up_median"] == 13.0
  official = [c for c, _ in calls if c[0] == "off/python"]
  assert official == [["off/python", "main.py", "--seed", "0"]] * 2
  ours = [c for c, cwd in calls if c[0] == sys.executable]
  assert len(ours) == 5 and all(c[1:3] == ["-m", "lamaml_jax.main"] for c in ours)
  assert all(c[-1] == "--method=er" for c in ours)
  flag = lambda c, name: next(a for a in c if a.startswith(name)).split("=", 1)[1]
  caches = [flag(c, "--compilation_cache_dir=") for c in ours]
  # The warm runs use the filled cache; each cold run an empty one of its own.
  assert caches[0] == caches[2] == caches[4] and len({caches[1], caches[3], caches[0]}) == 3
  assert len({flag(c, "--workdir=") for c in ours}) == 5  # each run starts afresh


def test_a_failing_whole_process_names_its_command(speed):
  failed = lambda cmd, **kwargs: subprocess.CompletedProcess(cmd, 2, "", "no data")
  with pytest.raises(RuntimeError, match=r"failed \(exit 2\):\nno data"):
    speed.whole_process_comparison("python main.py", 1, run=failed)


@pytest.mark.parametrize("epoch, pushed", [(0, 20), (1, 0)])
def test_cases_time_the_epoch_asked_for(speed, epoch, pushed):
  # Epoch 0, as in a single-pass run and the official harness: every timed
  # La-MAML call pushes its 10 samples to replay; a later epoch pushes none.
  timer = speed.CaseTimer("lamaml", "mnist5k_rotations", {"glances": 1}, repeats=2,
                          protocol=(1, 1), timed_epoch=epoch)
  before = int(timer._state.memory.seen)
  after, _ = timer._program()
  assert int(after.memory.seen) - before == pushed
