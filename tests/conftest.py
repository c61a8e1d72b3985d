"""Test set-up: keep XLA to the CPU and quiet; load benchmark scripts as modules."""
import atexit
import importlib.util
import json
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# One persistent XLA compilation cache per test session, fresh each session and
# shared by the pytest-xdist workers and the processes tests start (they inherit
# it through JAX's environment variables unless they name a cache of their own):
# the many tests that build the same small runs compile each program once. The
# process that starts the session (xdist's controller, or a plain pytest) makes
# it and removes it at exit; a pytest that a test starts uses its starter's. A
# cached executable is the same compiled code, so no result changes.
if "LAMAML_JAX_TEST_XLA_CACHE" not in os.environ:
  os.environ["LAMAML_JAX_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="lamaml_jax_test_xla_")
  atexit.register(shutil.rmtree, os.environ["LAMAML_JAX_TEST_XLA_CACHE"],
                  ignore_errors=True)
_XLA_CACHE, _MIN_COMPILE_S = os.environ["LAMAML_JAX_TEST_XLA_CACHE"], 0.3
os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(_MIN_COMPILE_S)

# The suite is bound by XLA:CPU compilation (three quarters of its time goes to
# compiling hundreds of small, distinct programs), so tests compile without
# LLVM's optimisations and without the fusion emitters: half the suite's time.
# Results then differ from a production build by float rounding only, which the
# tests' tolerances (set against independent derivations) do not notice; tests
# that hold two of our programs equal compile both alike. The processes tests
# start inherit these flags; the `production_xla_env` fixture is the environment
# without them, for the tests that run the production build. Set
# LAMAML_JAX_TEST_XLA_FLAGS= (empty) to run the whole suite on production flags.
TEST_XLA_FLAGS = os.environ.setdefault(
    "LAMAML_JAX_TEST_XLA_FLAGS",
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false")
_OWN_XLA_FLAGS = os.environ.get("XLA_FLAGS", "").replace(TEST_XLA_FLAGS, "").strip()
os.environ["XLA_FLAGS"] = f"{TEST_XLA_FLAGS} {_OWN_XLA_FLAGS}".strip()
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position  (after the env)
jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_S)


@pytest.fixture
def production_xla_env():
  """The environment for a process that compiles as a production run does: the
  suite's fast-compile XLA flags removed (any others kept)."""
  env = {**os.environ, "LAMAML_JAX_TEST_XLA_FLAGS": ""}
  env["XLA_FLAGS"] = _OWN_XLA_FLAGS
  return env


@pytest.fixture(scope="session")
def load_benchmark():
  """load_benchmark(name): benchmarks/<name>.py as a module (benchmarks/ holds
  scripts, not a package)."""
  def load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"benchmarks_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
  return load


@pytest.fixture
def run_stopped_after_checkpoints(monkeypatch):
  """run(config, workdir, stops): `train.run` stopped (KeyboardInterrupt) right
  after the checkpoint of each step in `stops` is on disk, as after a kill then,
  once per stop; the caller resumes with a plain `train.run`."""
  from lamaml_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from lamaml_jax import train  # pylint: disable=g-import-not-at-top
  original = checkpointing.Checkpointer.save

  def run(config, workdir, stops):
    for stop in stops:
      def save_then_stop(self, step, item, stop=stop):
        original(self, step, item)
        if step == stop:
          self.close()  # the checkpoint is on disk, as after a kill right then
          raise KeyboardInterrupt
      with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(checkpointing.Checkpointer, "save", save_then_stop)
        train.run(config, workdir)
  return run


def _reject_constant(constant):
  raise ValueError(f"{constant} is not strict JSON")


@pytest.fixture(autouse=True)
def outputs_are_strict_json(request):
  """After every test that writes under tmp_path: each results.json and
  metrics.jsonl of a run's workdir there (one holding config.json) parses as
  strict JSON (no NaN / Infinity)."""
  if "tmp_path" not in request.fixturenames:
    yield
    return
  root = request.getfixturevalue("tmp_path")
  yield
  for dirpath, _, names in os.walk(root):
    if "config.json" not in names:
      continue
    for name in names:
      path = os.path.join(dirpath, name)
      if name == "results.json":
        with open(path) as f:
          json.load(f, parse_constant=_reject_constant)
      elif name == "metrics.jsonl":
        with open(path) as f:
          for line in f:
            if line.strip():
              json.loads(line, parse_constant=_reject_constant)
