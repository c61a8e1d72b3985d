"""Test set-up: keep XLA to the CPU and quiet; load benchmark scripts as modules."""
import importlib.util
import os

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
