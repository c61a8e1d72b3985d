"""What results.json records about where its numbers came from: package
versions, the git commit of the code, and a hash of the configuration."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from typing import Iterable, Mapping, Optional

import jax
import numpy as np

import lamaml_jax


def package_versions() -> dict[str, str]:
  import flax, optax, orbax.checkpoint  # pylint: disable=g-import-not-at-top,multiple-imports
  return {"lamaml_jax": lamaml_jax.__version__, "jax": jax.__version__,
          "jaxlib": jax.lib.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "orbax-checkpoint": orbax.checkpoint.__version__,
          "numpy": np.__version__, "backend": jax.default_backend()}


def git_commit() -> Optional[str]:
  """The commit of the checkout this package runs from, with '+dirty' when it has
  uncommitted changes to tracked files; None outside a git checkout."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(lamaml_jax.__file__)))
  if not os.path.exists(os.path.join(root, "pyproject.toml")):
    return None  # installed (site-packages): not our checkout, whatever holds it
  try:
    run = lambda *args: subprocess.run(
        ["git", "-C", root, *args], capture_output=True, text=True, timeout=10,
        check=True).stdout.strip()
    commit = run("rev-parse", "HEAD")
    dirty = run("status", "--porcelain", "--untracked-files=no")
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty else "")


def config_hash(config: Mapping, ignore: Iterable[str] = ()) -> str:
  """16 hex digits of SHA-256 over the config's sorted JSON, without `ignore`d
  top-level fields (settings that change how a run executes, not what it
  computes), so that a resumed run keeps its hash."""
  kept = {k: v for k, v in config.items() if k not in set(ignore)}
  text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]
