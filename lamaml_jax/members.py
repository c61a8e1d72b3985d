"""Members of a run: seeds and hyperparameter settings trained as one vmapped program.

A run trains M >= 1 members side by side: `config.num_seeds` consecutive seeds from
`config.seed`, times every combination of `config.grid` (for example
'alpha_init=0.03,0.1;opt_lr=0.1,0.3'). Each member has its own benchmark stream
(rotations, permutations or class order drawn by its seed), initial weights and
PRNG keys, exactly as a single-seed run with that seed and those values. The
compiled programs map over the member axis: vectorised with `jax.vmap` on GPU/TPU
(many members for little more than the time of one), one after another on CPU
(`config.member_batching`), where the work is compute-bound and vmap would only
change the rounding.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np


def parse_grid(text: str, sweepable: Sequence[str]) -> dict[str, list[float]]:
  """'alpha_init=0.03,0.1;opt_lr=0.1' -> {'alpha_init': [0.03, 0.1], 'opt_lr': [0.1]}.

  Raises:
    ValueError: unknown name, a value that is not a non-negative number, or a name
      given twice; the message names the valid choices.
  """
  grid: dict[str, list[float]] = {}
  for part in filter(None, (p.strip() for p in (text or "").split(";"))):
    name, sep, values = part.partition("=")
    name = name.strip()
    if not sep or name not in sweepable:
      raise ValueError(f"Bad grid entry {part!r}: write NAME=V1,V2;... with NAME in "
                       f"{', '.join(sweepable)}.")
    if name in grid:
      raise ValueError(f"Grid names {name!r} twice.")
    try:
      grid[name] = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
      raise ValueError(f"Grid values of {name} must be numbers, got {values!r}.") from None
    if not grid[name] or min(grid[name]) < 0:
      raise ValueError(f"Grid values of {name} must be >= 0 and not empty, got {values!r}.")
  return grid


def parse_seeds(text: str) -> list[int]:
  """'0-4' -> [0, 1, 2, 3, 4]; '1,5' -> [1, 5] (launchers' --seeds)."""
  seeds = []
  for part in text.split(","):
    if "-" in part:
      lo, hi = part.split("-")
      seeds.extend(range(int(lo), int(hi) + 1))
    elif part.strip():
      seeds.append(int(part))
  if not seeds:
    raise ValueError(f"No seeds in {text!r}.")
  return seeds


def make_members(seed: int, num_seeds: int, grid: dict[str, list[float]]) -> list[dict]:
  """[{'seed': s, name: value, ...}] for every grid combination and seed."""
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {num_seeds}.")
  if seed < 0 or seed + num_seeds > 2**32:
    raise ValueError(f"Seeds must lie in [0, 2**32), got seed={seed} with num_seeds="
                     f"{num_seeds}; pick a seed in that range.")
  names = list(grid)
  return [{"seed": seed + i, **dict(zip(names, combo))}
          for combo in itertools.product(*(grid[n] for n in names))
          for i in range(num_seeds)]


def label(member: dict) -> str:
  """'seed 3, alpha_init=0.1' for messages."""
  rest = ", ".join(f"{k}={v:g}" for k, v in member.items() if k != "seed")
  return f"seed {member['seed']}" + (f", {rest}" if rest else "")


def stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
  """Stacks per-member host arrays on a new leading member axis."""
  return np.stack(arrays, axis=0)
