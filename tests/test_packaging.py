"""pyproject.toml: the pinned requirements fall in its ranges, and a plain
`pip install .` gives a package that finds its configs outside the checkout."""
import os
import shutil
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]


def _pins():
  pins = {}
  for line in open(os.path.join(ROOT, "requirements.txt")):
    line = line.split("#")[0].strip()
    if line:
      r = Requirement(line)
      pins[r.name.lower()] = next(iter(r.specifier)).version
  return pins


def test_every_pinned_requirement_lies_in_the_packages_ranges():
  project = _project()
  ranges = {Requirement(d).name.lower(): Requirement(d).specifier
            for d in project["dependencies"] + project["optional-dependencies"]["test"]}
  pins = _pins()
  # Each pin is a dependency (or a test one) and satisfies its range; each
  # runtime dependency is pinned.
  assert set(pins) == set(ranges), set(pins) ^ set(ranges)
  for name, version in pins.items():
    assert ranges[name].contains(version), (name, version, str(ranges[name]))


def test_a_plain_install_finds_its_configs_and_entry_points(tmp_path):
  src = tmp_path / "src"  # a copy: pip builds in the tree it installs from
  src.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), src / name)
  for package in ("lamaml_jax", "configs", "launch"):
    shutil.copytree(os.path.join(ROOT, package), src / package,
                    ignore=shutil.ignore_patterns("__pycache__"))
  target = tmp_path / "site"
  r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                      "--no-build-isolation", "--no-index", "--target", str(target),
                      str(src)], capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stdout + r.stderr
  assert (target / "bin" / "lamaml-jax").exists()
  assert (target / "bin" / "lamaml-jax-collect").exists()
  assert (target / "bin" / "lamaml-jax-sweep").exists()
  # From elsewhere, with only the installed copy on the path: the configs and
  # launchers import, and a cell builds.
  check = ("import configs, launch.slurm, lamaml_jax.train, lamaml_jax, os; "
           "c = configs.get_config('lamaml', 'cifar100'); "
           "assert c.method == 'lamaml', c.method; "
           "print(os.path.dirname(lamaml_jax.__file__))")
  r = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True,
                     text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(target)})
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == str(target / "lamaml_jax")
  r = subprocess.run([str(target / "bin" / "lamaml-jax"), "--helpfull"], cwd=tmp_path,
                     capture_output=True, text=True, timeout=120,
                     env={**os.environ, "PYTHONPATH": str(target)})
  assert r.returncode == 0 and "--method" in r.stdout, r.stdout + r.stderr
