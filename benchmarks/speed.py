r"""Speed figures of the La-MAML learners, printed as a table and JSON.

  python benchmarks/speed.py                       # all cases
  python benchmarks/speed.py --cases=mnist_fo,cifar_so --repeats=30
  python benchmarks/speed.py --full_run            # + full 20-task mnist5k_rotations runs
  python benchmarks/speed.py --cases= --full_run \
      --official_full_cmd="PYTHON main.py FLAGS"   # whole processes, back to back
  python benchmarks/speed.py --cifar_run --members=1,8,32   # accelerator figures
  python benchmarks/speed.py --official_json=official.json  # beside the official code
  python benchmarks/speed.py --cases=mnist_fo,cifar_so \
      --official_cmd="PYTHON official_observe_bench.py LA-MAML-DIR"  # back to back

For each case: compile time, ms per `observe` called from Python (one dispatch per
call), and ms per observe inside a compiled task program (`lax.scan` over many
stream batches, as `train.run` does). Batches are synthetic, of the real shapes;
the replay buffer is full, as in the middle of a run. Compare figures only with
ones measured in the same run on the same machine.

--full_run times whole `train.run`s of the default configuration, cold: each in a
fresh process (no in-process or persistent compilation cache), so compilation,
data, evaluation and outputs are included. On a shared machine one run can take
30% longer than the next, so several are timed and the fastest and the median
reported, with the process's own wall time (interpreter start and imports too).
With --official_full_cmd (the official `main.py` on the same tasks, e.g. those
`benchmarks/official_mnist_data.py` writes, with `run_experiments.sh`'s flags),
--full_run instead times whole processes back to back, round by round: the
official command, then `python -m lamaml_jax.main` cold (an empty compilation
cache) and warm (a cache an untimed first run filled), and prints the ratios.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import configs  # pylint: disable=g-import-not-at-top,wrong-import-position
from lamaml_jax import networks  # pylint: disable=wrong-import-position
from lamaml_jax import replay as replay_lib  # pylint: disable=wrong-import-position
from lamaml_jax import timeline  # pylint: disable=wrong-import-position
from lamaml_jax import train  # pylint: disable=wrong-import-position
from lamaml_jax.learners import make_learner  # pylint: disable=wrong-import-position
from lamaml_jax.learners.base import BuildContext  # pylint: disable=wrong-import-position
from lamaml_jax.types import Batch  # pylint: disable=wrong-import-position

# The official code's GEM / A-GEM behaviour on MNIST (the harness's flags: its
# CIFAR lr and margin, default clip 2.0), where our MNIST cells follow the MER
# repository's original GEM.
_OFFICIAL_GEM = dict(lr=0.03, memory_strength=0.5, qp_epsilon=1e-3, grad_clip_norm=2.0,
                     clip_memory_grads=True, shared_pointer=True, n_memories=10)
_OFFICIAL_AGEM = dict(lr=0.03, grad_clip_norm=2.0, agem_ref="per_task_clipped_mean",
                      skip_task0=True, shared_pointer=True, n_memories=10)

# name -> (description, method, config arg, learner overrides)
CASES = {
    "mnist_fo_update": ("MNIST MLP, one meta-update (k=10 x 1, meta 20), 1st order",
                        "lamaml", "mnist5k_rotations", dict(glances=1)),
    "mnist_so_update": ("MNIST MLP, one meta-update, 2nd order", "lamaml",
                        "mnist5k_rotations", dict(glances=1, first_order=False)),
    "mnist_fo": ("MNIST La-MAML observe (5 glances x 10 inner steps), 1st order",
                 "lamaml", "mnist5k_rotations", {}),
    "mnist_so": ("MNIST La-MAML observe (5 glances), 2nd order", "lamaml",
                 "mnist5k_rotations", dict(first_order=False)),
    "cifar_fo": ("CIFAR La-MAML observe (k=5 x 2, meta 20), 1st order", "lamaml",
                 "cifar100", dict(first_order=True)),
    "cifar_so": ("CIFAR La-MAML observe, 2nd order", "lamaml", "cifar100", {}),
    "cifar_laer": ("CIFAR La-ER observe, 1st order", "laer", "cifar100", {}),
    # Baselines with the official harness's settings (batch 10, its glances and
    # flags; the harness's docstring), which may differ from
    # their paper-cell configs.
    "mnist_er": ("MNIST ER observe (5 glances on 10 + 10 replay)", "er",
                 "mnist5k_rotations", dict(glances=5, lr=0.03, grad_clip_norm=2.0,
                                           replay_batch_size=10)),
    "mnist_gem": ("MNIST GEM observe (5 glances, 10 past tasks)", "gem",
                  "mnist5k_rotations", dict(_OFFICIAL_GEM, glances=5)),
    "mnist_agem": ("MNIST A-GEM observe (5 glances, 9 past tasks)", "agem",
                   "mnist5k_rotations", dict(_OFFICIAL_AGEM, glances=5)),
    "cifar_er": ("CIFAR ER observe (replay 1)", "er", "cifar100", {}),
    "cifar_er10": ("CIFAR ER observe (replay 10)", "er", "cifar100",
                   dict(replay_batch_size=10)),
    "cifar_er_sp": ("CIFAR ER observe (10 glances, replay 1)", "er",
                    "cifar100,single_pass", {}),
    "cifar_gem": ("CIFAR GEM observe (10 past tasks)", "gem", "cifar100", {}),
    "cifar_gem_sp": ("CIFAR GEM observe (2 glances, 10 past tasks)", "gem",
                     "cifar100,single_pass", {}),
    "cifar_agem": ("CIFAR A-GEM observe (9 past tasks)", "agem", "cifar100", {}),
    "cifar_agem_sp": ("CIFAR A-GEM observe (2 glances, 9 past tasks)", "agem",
                      "cifar100,single_pass", {}),
    "cifar_iid": ("CIFAR IID step (batch 32: 8 of each of 4 tasks)", "iid", "cifar100", {}),
    "cifar_icarl": ("CIFAR iCaRL observe (10 past tasks' distillation)", "icarl",
                    "cifar100", {}),
    "cifar_icarl_sp": ("CIFAR iCaRL observe (2 glances, 10 past tasks)", "icarl",
                       "cifar100,single_pass", {}),
    "cifar_bgd": ("CIFAR Meta-BGD observe (2 MC samples x 3 inner steps, 2nd order)",
                  "meta_bgd", "cifar100", {}),
    "cifar_bgd_sp": ("CIFAR Meta-BGD observe (3 glances)", "meta_bgd",
                     "cifar100,single_pass", {}),
    "mnist_mer": ("MNIST MER observe (10 examples x 5 rounds x 11 steps)", "mer",
                  "mnist5k_rotations", dict(lr=0.1, beta=0.1, batches_per_example=5,
                                            replay_batch_size=10, grad_clip_norm=10.0)),
    "cifar_mer": ("CIFAR MER observe (1 example x 10 rounds x 26 steps)", "mer",
                  "cifar100,single_pass", {}),
}
SHAPES = {"mlp": ((784,), 10, None), "cifar_cnn": ((32, 32, 3), 100, 5)}
# The official code's timing harness (`official_observe_bench.py --configs ...`)
# times one observe() of these configurations the way `time_case` times ours.
OFFICIAL_CONFIGS = {"mnist_fo": "e", "mnist_so": "f", "cifar_so": "a", "cifar_fo": "b",
                    "cifar_laer": "h", "mnist_er": "v", "mnist_gem": "w",
                    "mnist_agem": "x", "cifar_er": "d", "cifar_er10": "o",
                    "cifar_er_sp": "p", "cifar_gem": "j", "cifar_gem_sp": "r",
                    "cifar_agem": "k", "cifar_agem_sp": "s", "cifar_iid": "n",
                    "mnist_mer": "y", "cifar_mer": "t", "cifar_icarl": "l",
                    "cifar_icarl_sp": "q", "cifar_bgd": "m", "cifar_bgd_sp": "u"}
# The state a case is timed in, as the harness's protocols set it up: (task the
# timed calls belong to, stream batches observed before, on each of the tasks
# before it, or on task 0 when it is 0). Reservoir methods: the buffer full
# (20 batches of 10 fill 200 slots); per-task memories: 10 past tasks of 10.
_MEMORY_TASKS = (10, 1)
PROTOCOLS = {"mnist_er": (0, 20), "mnist_gem": _MEMORY_TASKS,
             "mnist_agem": _MEMORY_TASKS, "cifar_gem": _MEMORY_TASKS,
             "cifar_gem_sp": _MEMORY_TASKS, "cifar_agem": _MEMORY_TASKS,
             "cifar_agem_sp": _MEMORY_TASKS, "mnist_mer": (1, 0), "cifar_mer": (1, 0),
             # iCaRL: 25 calls a task, then its end_task (herding), as the harness.
             "cifar_icarl": (10, 25), "cifar_icarl_sp": (10, 25)}
DEFAULT_PROTOCOL = (1, 20)  # La-MAML family, ER, IID: buffer filled on task 0
# Timed batches of more than one task: (batch size, tasks per batch).
MIXED_BATCHES = {"cifar_iid": (32, 4), "cifar_mer": (1, 1)}
# Reservoirs written directly with this many samples before timing, as the
# harness's `mer` protocol does (200 MER observe calls would take minutes).
PREFILL = {"mnist_mer": 200, "cifar_mer": 200}

CASES_FLAG = flags.DEFINE_list("cases", list(CASES), "Cases to time.")
REPEATS = flags.DEFINE_integer("repeats", 20, "Timed observe calls per case.")
TIMED_EPOCH = flags.DEFINE_integer(
    "timed_epoch", 0, "Epoch of the timed calls: 0, as in a single-pass run and the "
    "official harness (La-MAML pushes to replay), or 1 (a multi-pass run's later "
    "epoch: no pushes; the figures README's speed table had before this flag).",
    lower_bound=0)
TRIALS = flags.DEFINE_integer(
    "trials", 5, "Timed runs of each measurement; the fastest is reported (the "
    "least disturbed by other work on the machine).")
FULL_RUN = flags.DEFINE_bool("full_run", False,
                             "Also time full 20-task mnist5k_rotations runs.")
FULL_RUN_TRIALS = flags.DEFINE_integer(
    "full_run_trials", 3, "Cold --full_run runs, each in a fresh process; 1 runs "
    "it in this process (cold too, unless a case already compiled its programs).",
    lower_bound=1)
CIFAR_RUN = flags.DEFINE_bool(
    "cifar_run", False, "Also time a full CIFAR-100 multi-pass La-MAML run on "
    "synthetic data of the real shapes (about 2 h on 2 CPU cores).")
CIFAR_TASKS = flags.DEFINE_integer("cifar_run_tasks", 20, "Tasks of --cifar_run.")
MEMBERS = flags.DEFINE_list(
    "members", [], "Member counts (seeds) to time as one vmapped task program, e.g. "
    "1,8,32, for --member_case.")
MEMBER_CASE = flags.DEFINE_string("member_case", "mnist_fo", "Case for --members.")
JSON_OUT = flags.DEFINE_string("json", None, "Also write the figures to this file.")
OFFICIAL_CMD = flags.DEFINE_string(
    "official_cmd", None, "The official code's timing harness with its La-MAML "
    "checkout, e.g. 'PYTHON official_observe_bench.py LA-MAML-DIR' (PYTHON: an "
    "environment with torch). Each case with an official configuration is then "
    "timed back to back with it for --official_rounds rounds, and the median "
    "speed-up printed: the fairest comparison on a machine whose speed drifts.")
OFFICIAL_FULL_CMD = flags.DEFINE_string(
    "official_full_cmd", None, "With --full_run: the official main.py run on the "
    "same tasks as the default run, as a shell-style command (its environment and "
    "thread setting included, e.g. 'env OMP_NUM_THREADS=1 PYTHON main.py ...'). "
    "Each of --full_run_trials rounds then times it, our default run cold and our "
    "run warm, each as a whole process, and the ratios are printed.")
OFFICIAL_ROUNDS = flags.DEFINE_integer("official_rounds", 3, "Rounds of --official_cmd.",
                                       lower_bound=1)
OFFICIAL_JSON = flags.DEFINE_string(
    "official_json", None, "JSON written by the official code's timing harness "
    "(official_observe_bench.py --configs e,f,a,b,h --json FILE), run just before on "
    "the same machine: its medians are printed beside ours, with the speed-up.")


def official_figures(harness_json: dict) -> dict[str, dict]:
  """{case: official median / min ms per observe} from the harness's JSON output."""
  by_config = {r["config"]: r for r in harness_json.get("results", [])}
  return {case: {"config": letter, "median_ms": round(by_config[letter]["median_ms"], 2),
                 "min_ms": round(by_config[letter]["min_ms"], 2)}
          for case, letter in OFFICIAL_CONFIGS.items() if letter in by_config}


def comparison_rows(cases: dict[str, dict], official: dict[str, dict]) -> list[str]:
  """Table lines: our ms per observe in a program beside the official median."""
  rows = [f"{'case':<16} {'ours ms':>8} {'official ms':>11} {'speed-up':>8}"]
  for name, ours in cases.items():
    if name in official:
      ms, theirs = ours["ms_per_observe_in_program"], official[name]["median_ms"]
      rows.append(f"{name:<16} {ms:>8.2f} {theirs:>11.2f} {theirs / ms:>7.1f}x")
  return rows


def interleaved_rows(comparison: dict[str, dict]) -> list[str]:
  """Table lines of `interleaved_comparison`: medians over rounds, and the range."""
  rows = [f"{'case':<16} {'ours ms':>8} {'official ms':>11} {'speed-up':>8}  "
          "(back to back, median of rounds; range)"]
  for name, r in comparison.items():
    rows.append(f"{name:<16} {statistics.median(r['ours_ms']):>8.2f} "
                f"{statistics.median(r['official_ms']):>11.2f} "
                f"{r['speed_up_median']:>7.1f}x  "
                f"({min(r['speed_up']):.1f}-{max(r['speed_up']):.1f}x)")
  return rows


def synthetic_batch(key, shape, num_outputs, classes_per_task, n=10, task=1,
                    tasks_per_batch=1):
  """n random samples of `task` (or n / k of each of tasks task..task+k-1)."""
  kx, ky = jax.random.split(key)
  tasks = task + jnp.repeat(jnp.arange(tasks_per_batch), n // tasks_per_batch)
  lo = 0 if classes_per_task is None else tasks * classes_per_task
  width = num_outputs if classes_per_task is None else classes_per_task
  y = lo + jax.random.randint(ky, (n,), 0, width)
  return Batch(x=jax.random.normal(kx, (n, *shape)), y=y.astype(jnp.int32),
               task=tasks.astype(jnp.int32), weight=jnp.ones((n,)))


def fastest(fn, trials):
  """Seconds of the fastest of `trials` runs of fn() (which blocks until done)."""
  times = []
  for _ in range(trials):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


class CaseTimer:
  """One case's `observe`, compiled once alone and once in a task program (a
  `lax.scan` over `repeats` stream batches), timed on demand, in the state the
  case's protocol sets up (`PROTOCOLS`) by observing synthetic batches."""

  def __init__(self, method, arg, overrides, repeats, protocol=DEFAULT_PROTOCOL,
               mixed=(10, 1), prefill=0, timed_epoch=0):
    config = configs.get_config(method, arg)
    for k, v in overrides.items():
      config.learner[k] = v
    self.glances = int(config.learner.get("glances", 1))
    self.repeats = repeats
    shape, outputs, cpt = SHAPES[config.arch]
    context = BuildContext(
        network=networks.make_network(config.arch, outputs), num_outputs=outputs,
        classes_per_task=cpt, num_tasks=20, samples_per_task=1000,
        batch_size=mixed[0], epochs=1, steps_per_task=100, input_shape=shape)
    learner = make_learner(method, config.learner.to_dict(), context)
    timed_task, fill_calls = protocol
    key = jax.random.PRNGKey(0)
    batches = [synthetic_batch(jax.random.fold_in(key, i), shape, outputs, cpt,
                               n=mixed[0], task=timed_task, tasks_per_batch=mixed[1])
               for i in range(repeats)]
    state = learner.init(key, batches[0])
    # As in the middle of a run: observe the tasks before (epoch 0, which fills
    # every kind of memory), then time calls of `timed_epoch`: 0 is what a
    # single-pass run and the official harness (real_epoch = 0) do on every call,
    # La-MAML's replay push included; 1 is a later epoch of a multi-pass run.
    observe = jax.jit(learner.observe)
    end_task = jax.jit(learner.end_task) if learner.end_task else None
    for task in range(max(timed_task, 1)):
      fills = []
      for i in range(fill_calls):
        fill = synthetic_batch(jax.random.fold_in(key, 1000 * task + i + 10**6), shape,
                               outputs, cpt, task=task)
        state, _ = observe(state, fill, jnp.int32(0))
        fills.append(fill)
      if end_task is not None and fills and task < timed_task:  # e.g. iCaRL's herding
        state = end_task(state, jnp.concatenate([f.x for f in fills]),
                         jnp.concatenate([f.y for f in fills]), jnp.int32(task))
    if prefill:
      fill = synthetic_batch(jax.random.fold_in(key, 10**7), shape, outputs, cpt,
                             n=prefill, task=0)
      state = state._replace(memory=replay_lib.add(state.memory, key, fill))
    epoch = jnp.int32(timed_epoch)

    t0 = time.perf_counter()
    compiled = jax.jit(learner.observe).lower(state, batches[0], epoch).compile()
    self.compile_s = time.perf_counter() - t0
    state, _ = compiled(state, batches[0], epoch)
    jax.block_until_ready(state)

    def calls():
      s = state
      for b in batches:
        s, _ = compiled(s, b, epoch)
      jax.block_until_ready(s)
    self._calls = calls

    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *batches)
    scan = jax.jit(lambda s, bs: jax.lax.scan(lambda s, b: learner.observe(s, b, epoch),
                                              s, bs))
    t0 = time.perf_counter()
    scan_compiled = scan.lower(state, stacked).compile()
    self.program_compile_s = time.perf_counter() - t0
    state, _ = scan_compiled(state, stacked)
    jax.block_until_ready(state)
    self._state = state  # what every timed call starts from
    self._program = lambda: jax.block_until_ready(scan_compiled(state, stacked))

  def ms_per_call(self, trials: int) -> float:
    """ms per observe called from Python, fastest of `trials` runs."""
    return fastest(self._calls, trials) / self.repeats * 1e3

  def ms_in_program(self, trials: int) -> float:
    """ms per observe inside the task program, fastest of `trials` runs."""
    return fastest(self._program, trials) / self.repeats * 1e3


def time_case(timer: CaseTimer, trials: int = 1) -> dict:
  """A case's figures: its compile times, and the fastest of `trials` timings."""
  call_ms, scan_ms = timer.ms_per_call(trials), timer.ms_in_program(trials)
  return {"compile_s": round(timer.compile_s, 2), "ms_per_observe_call": round(call_ms, 2),
          "program_compile_s": round(timer.program_compile_s, 2),
          "ms_per_observe_in_program": round(scan_ms, 2),
          "glances": timer.glances,
          "ms_per_meta_update_in_program": round(scan_ms / timer.glances, 3)}


def run_official_harness(command: str, case: str, run=subprocess.run) -> float:
  """Official median ms per observe() of a case: `command` (the harness with its
  La-MAML checkout, as a shell-style string) run with the case's --configs/--json."""
  config = OFFICIAL_CONFIGS[case]
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "official.json")
    proc = run([*shlex.split(command), "--configs", config, "--json", path],
               capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      raise RuntimeError(f"The official harness failed (--configs {config}); fix "
                         f"--official_cmd:\n{proc.stderr[-3000:]}")
    with open(path) as f:
      return official_figures(json.load(f))[case]["median_ms"]


def interleaved_comparison(ours: dict, official: Callable[[str], float],
                           rounds: int) -> dict[str, dict]:
  """Speed-ups measured back to back, so that the machine's drift cancels.

  Each round times, for every case, the official code (`official(case)` -> median
  ms) and then ours (`ours[case]()` -> ms), and takes their ratio.

  Returns:
    {case: {"official_ms", "ours_ms", "speed_up": one per round, and
    "speed_up_median"}}.
  """
  out = {case: {"official_ms": [], "ours_ms": [], "speed_up": []} for case in ours}
  for _ in range(rounds):
    for case, time_ours in ours.items():
      theirs, mine = official(case), time_ours()
      out[case]["official_ms"].append(round(theirs, 2))
      out[case]["ours_ms"].append(round(mine, 2))
      out[case]["speed_up"].append(round(theirs / mine, 2))
  for r in out.values():
    r["speed_up_median"] = statistics.median(r["speed_up"])
  return out


def full_run(arg: str, num_tasks=None):
  """Wall time of a whole `train.run` (compilation, data, evaluation included)."""
  config = configs.get_config("lamaml", arg)
  config.num_tasks = num_tasks
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    results = train.run(config, workdir)
    wall = time.perf_counter() - t0
  return {"wall_s": round(wall, 1), "ra": round(results["ra"], 4),
          "meta_updates": results["meta_updates"]}


def cold_full_runs(trials: int, run=subprocess.run) -> dict:
  """`full_run` in `trials` fresh processes: the fastest, the median and each.

  Every process runs this script with --full_run_trials=1 and no case, so nothing
  is compiled before the run and nothing is cached between runs.
  """
  results, process_walls = [], []
  for _ in range(trials):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "figures.json")
      cmd = [sys.executable, os.path.abspath(__file__), "--cases=", "--full_run",
             "--full_run_trials=1", f"--json={path}"]
      process_walls.append(round(timeline.timed_process(cmd, run=run), 1))
      with open(path) as f:
        results.append(json.load(f)["full_run_mnist5k_rotations"])
  walls = [r["wall_s"] for r in results]
  return {"wall_s": min(walls), "wall_s_median": statistics.median(walls),
          "wall_s_trials": walls, "process_wall_s_trials": process_walls,
          "ra": results[0]["ra"], "meta_updates": results[0]["meta_updates"]}


def whole_process_comparison(official_cmd: str, rounds: int, main_flags=(),
                             run=subprocess.run, clock=time.perf_counter) -> dict:
  """Whole-process wall times of the official command and of our main, interleaved.

  An untimed run of `python -m lamaml_jax.main [main_flags]` first fills a
  compilation cache; then each round times the official command, our run with
  an empty cache (cold) and our run with the filled one (warm), each in a fresh
  workdir, so that the machine's drift falls on all three alike.

  Returns:
    {"official_s", "cold_s", "warm_s": one per round, "cold_speed_up" and
    "warm_speed_up": official / ours per round, and their "_median"s}.
  """
  def timed(cmd, cwd=None):
    return round(timeline.timed_process(cmd, cwd, run=run, clock=clock), 2)

  out = {"official_s": [], "cold_s": [], "warm_s": []}
  with tempfile.TemporaryDirectory() as tmp:
    def ours(cache, name):
      return [sys.executable, "-m", "lamaml_jax.main", f"--workdir={tmp}/{name}",
              f"--compilation_cache_dir={cache}", *main_flags]
    warm_cache = os.path.join(tmp, "warm_cache")
    timed(ours(warm_cache, "fill"), ROOT)
    for r in range(rounds):
      out["official_s"].append(timed(shlex.split(official_cmd)))
      out["cold_s"].append(timed(ours(os.path.join(tmp, f"cold_cache{r}"), f"cold{r}"),
                                 ROOT))
      out["warm_s"].append(timed(ours(warm_cache, f"warm{r}"), ROOT))
  for kind in ("cold", "warm"):
    ratios = [round(o / t, 2) for o, t in zip(out["official_s"], out[f"{kind}_s"])]
    out[f"{kind}_speed_up"] = ratios
    out[f"{kind}_speed_up_median"] = statistics.median(ratios)
  return out


def time_members(case: str, counts: list[int], steps: int = 20):
  """ms per observe of M members vmapped in one task program, for each M.

  Each entry also gives its time over the smallest count's ('x_fewest'): the
  issue's accelerator target is 8 members in at most 2x the time of 1.
  """
  _, method, arg, overrides = CASES[case]
  out = {}
  for m in sorted(counts):
    config = configs.get_config(method, arg)
    config.num_tasks, config.num_seeds, config.member_batching = 1, m, "vmap"
    config.samples_per_task = steps * config.batch_size
    for k, v in overrides.items():
      config.learner[k] = v
    parts = train.build(config)
    place, benches = parts.placement, parts.benchmarks  # members over the devices
    members = place.pad(parts.members)
    state, keys = place.put(train.init_members(
        parts.learner, members, train.example_batch(benches[0], config.batch_size)))
    data = [parts.schedule.data(benches[s["seed"]], 0) for s in members]
    x, y, tasks = (place.put(np.stack([d[i] for d in data])) for i in range(3))
    task, start = place.shared(np.int32(0)), place.shared(np.int32(0))
    length = place.shared(np.int32(steps))  # the run's program: any length
    t0 = time.perf_counter()
    compiled = parts.train.lower(state, x, y, tasks, task, keys, start, length,
                                 num_steps=steps).compile()
    compile_s = time.perf_counter() - t0
    state, _ = compiled(state, x, y, tasks, task, keys, start, length)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    state, _ = compiled(state, x, y, tasks, task, keys, start, length)
    jax.block_until_ready(state)
    wall = time.perf_counter() - t0
    out[m] = {"ms_per_observe_all_members": round(wall / steps * 1e3, 2),
              "ms_per_member_observe": round(wall / steps / m * 1e3, 3),
              "compile_s": round(compile_s, 1)}
    fewest = out[min(out)]["ms_per_observe_all_members"]
    out[m]["x_fewest"] = round(out[m]["ms_per_observe_all_members"] / fewest, 2)
    print(f"{m:>3} members ({case}): {out[m]}", flush=True)
  return out


def main(argv):
  del argv
  info = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
          "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
          "jax": jax.__version__}
  figures = {"machine": info, "cases": {}}
  print(f"{'case':<16} {'compile s':>9} {'ms/call':>8} {'ms/obs prog':>11} "
        f"{'ms/update':>9}  description")
  timers = {}
  for name in filter(None, CASES_FLAG.value):
    description, method, arg, overrides = CASES[name]
    timer = CaseTimer(method, arg, overrides, REPEATS.value,
                      PROTOCOLS.get(name, DEFAULT_PROTOCOL),
                      MIXED_BATCHES.get(name, (10, 1)), PREFILL.get(name, 0),
                      TIMED_EPOCH.value)
    if OFFICIAL_CMD.value and name in OFFICIAL_CONFIGS:
      timers[name] = timer
    r = time_case(timer, TRIALS.value)
    figures["cases"][name] = r
    print(f"{name:<16} {r['compile_s']:>9.2f} {r['ms_per_observe_call']:>8.2f} "
          f"{r['ms_per_observe_in_program']:>11.2f} "
          f"{r['ms_per_meta_update_in_program']:>9.3f}  {description}", flush=True)
  if OFFICIAL_JSON.value:
    with open(OFFICIAL_JSON.value) as f:
      official = official_figures(json.load(f))
    figures["official"] = official
    print("\n".join(comparison_rows(figures["cases"], official)), flush=True)
  if timers:
    figures["interleaved"] = interleaved_comparison(
        {case: (lambda t=t: t.ms_in_program(TRIALS.value)) for case, t in timers.items()},
        lambda case: run_official_harness(OFFICIAL_CMD.value, case),
        OFFICIAL_ROUNDS.value)
    print("\n".join(interleaved_rows(figures["interleaved"])), flush=True)
  if FULL_RUN.value and OFFICIAL_FULL_CMD.value:
    r = whole_process_comparison(OFFICIAL_FULL_CMD.value, FULL_RUN_TRIALS.value)
    figures["whole_process_comparison"] = r
    print(f"whole processes, back to back ({FULL_RUN_TRIALS.value} rounds): official "
          f"{statistics.median(r['official_s']):.1f} s, ours cold "
          f"{statistics.median(r['cold_s']):.1f} s ({r['cold_speed_up_median']:.1f}x), "
          f"warm {statistics.median(r['warm_s']):.1f} s "
          f"({r['warm_speed_up_median']:.1f}x)", flush=True)
  elif FULL_RUN.value:
    figures["full_run_mnist5k_rotations"] = (
        full_run("mnist5k_rotations") if FULL_RUN_TRIALS.value == 1
        else cold_full_runs(FULL_RUN_TRIALS.value))
    print("full 20-task mnist5k_rotations La-MAML run:",
          figures["full_run_mnist5k_rotations"], flush=True)
  if CIFAR_RUN.value:
    figures["cifar_run_synthetic"] = full_run("synthetic_cifar100,multi_pass",
                                              CIFAR_TASKS.value)
    print(f"CIFAR-100 multi-pass La-MAML run ({CIFAR_TASKS.value} tasks, synthetic):",
          figures["cifar_run_synthetic"], flush=True)
  if MEMBERS.value:
    figures["members"] = time_members(MEMBER_CASE.value, [int(m) for m in MEMBERS.value])
  figures["peak_host_memory_mb"] = round(
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
  print(json.dumps(figures, indent=2))
  if JSON_OUT.value:
    with open(JSON_OUT.value, "w") as f:
      json.dump(figures, f, indent=2)


if __name__ == "__main__":
  app.run(main)
