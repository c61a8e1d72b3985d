"""Members of a run: seeds and hyperparameter settings trained as one program.

A run trains M >= 1 members side by side: `config.num_seeds` consecutive seeds from
`config.seed`, times every combination of `config.grid` (for example
'alpha_init=0.03,0.1;opt_lr=0.1,0.3'). Each member has its own benchmark stream
(rotations, permutations or class order drawn by its seed), initial weights and
PRNG keys, exactly as a single-seed run with that seed and those values. The
compiled programs map over the member axis: vectorised with `jax.vmap` on GPU/TPU
(many members for little more than the time of one), one after another on CPU
(`config.member_batching`), where the work is compute-bound and vmap would only
change the rounding.

Where members run is a `Placement`: with several devices the member axis is
sharded over a one-axis mesh ('members'), M padded to a multiple of the device
count with copies of the last member, each device mapping (or vmapping) its own
block inside `jax.shard_map`. Programs see only `Placement.map`; the runner
moves data with `put`/`shared` and drops the padding with `unpad`.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

AXIS = "members"
BATCHINGS = ("vmap", "map")


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


def map_local(fn: Callable, batching: str) -> Callable:
  """Maps `fn` over the leading member axis of all its arguments, on one device.

  'vmap' vectorises the members (what pays on GPU/TPU); 'map' runs them one after
  another inside the program (`lax.map`), so each member computes bit for bit what
  a single-member run computes: XLA:CPU's batched matmuls round differently from
  unbatched ones, and training amplifies those last bits.
  """
  if batching not in BATCHINGS:
    raise ValueError(f"member batching must be 'vmap' or 'map', got {batching!r}.")

  def mapped(*args):
    if jax.tree_util.tree_leaves(args)[0].shape[0] == 1:
      # One member: run it unwrapped (a size-1 map or vmap slows XLA:CPU down;
      # BUILD.md).
      out = fn(*jax.tree_util.tree_map(lambda a: a[0], args))
      return jax.tree_util.tree_map(lambda a: a[None], out)
    if batching == "vmap":
      return jax.vmap(fn)(*args)
    return jax.lax.map(lambda a: fn(*a), args)

  return mapped


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where a run's M members live.

  Attributes:
    num_members: M, the run's members.
    batching: 'vmap' or 'map', how a device runs its block of members.
    devices: the mesh's devices; () for one device (no mesh: the programs are
      exactly those of a single-device run).
  """
  num_members: int
  batching: str = "map"
  devices: tuple = ()

  @classmethod
  def create(cls, num_members: int, batching: str = "auto", num_devices: int = 0,
             devices: Optional[Sequence[Any]] = None) -> "Placement":
    """Members over `num_devices` of `devices` (default `jax.devices()`; 0: all of
    them), never more devices than members. 'auto' batching: map on CPU, vmap
    elsewhere.

    Raises:
      ValueError: unknown batching, or more devices asked for than there are.
    """
    devices = list(jax.devices() if devices is None else devices)
    if batching == "auto":
      batching = "map" if devices[0].platform == "cpu" else "vmap"
    if batching not in BATCHINGS:
      raise ValueError(f"member_batching must be 'auto', 'vmap' or 'map', got "
                       f"{batching!r}.")
    if not 0 <= num_devices <= len(devices):
      raise ValueError(
          f"member_devices={num_devices} but {len(devices)} device(s) are visible: "
          f"pass 0 (all of them) or a number up to {len(devices)}.")
    n = min(num_devices or len(devices), num_members)
    return cls(num_members, batching, tuple(devices[:n]) if n > 1 else ())

  @property
  def num_devices(self) -> int:
    return max(len(self.devices), 1)

  @property
  def padded(self) -> int:
    """M rounded up to a multiple of the device count."""
    return -(-self.num_members // self.num_devices) * self.num_devices

  @functools.cached_property
  def mesh(self) -> Optional[Mesh]:
    return Mesh(np.asarray(self.devices), (AXIS,)) if self.devices else None

  def pad(self, members: Sequence[Any]) -> list:
    """The member list padded to `padded` with copies of its last entry."""
    members = list(members)
    return members + [members[-1]] * (self.padded - len(members))

  def pad_tree(self, tree):
    """Pads every leaf's leading member axis (M) to `padded` (host arrays)."""
    extra = self.padded - self.num_members
    if not extra:
      return tree
    return jax.tree_util.tree_map(
        lambda a: np.concatenate([a, np.repeat(np.asarray(a)[-1:], extra, 0)]), tree)

  def unpad(self, tree):
    """Every leaf's first M rows along the member axis: the padding dropped."""
    if self.padded == self.num_members:
      return tree
    return jax.tree_util.tree_map(lambda a: a[:self.num_members], tree)

  def map(self, fn: Callable) -> Callable:
    """`fn` of one member mapped over the leading member axis of every argument
    (padded M); values that `fn` closes over are the same on every device."""
    local = map_local(fn, self.batching)
    if self.mesh is None:
      return local
    spec = PartitionSpec(AXIS)
    # Members never communicate (no collectives), so the varying-axis type check
    # has nothing to find, and it would make every loop carry created inside a
    # member's program (zeros of a metrics buffer) cast to 'varying' first.
    return jax.shard_map(local, mesh=self.mesh, in_specs=spec, out_specs=spec,
                         check_vma=False)

  def _sharding(self, shared: bool) -> Optional[NamedSharding]:
    if self.mesh is None:
      return None
    return NamedSharding(self.mesh, PartitionSpec() if shared else PartitionSpec(AXIS))

  def put(self, tree):
    """Arrays with a leading (padded) member axis onto the members' devices."""
    return jax.device_put(tree, self._sharding(False))

  def shared(self, tree):
    """Arrays every member reads (scalars, per-seed data): on every device."""
    return jax.device_put(tree, self._sharding(True))

  def abstract(self, tree, shared: bool = False):
    """`jax.ShapeDtypeStruct`s of `tree` placed as `put` (or `shared`) would
    place them, to compile programs before the data exists."""
    if self.mesh is None:
      return tree
    sharding = self._sharding(shared)
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def placement(batching: "str | Placement") -> Placement:
  """`batching` as a `Placement` (a string: one device, that batching; `map`
  checks it, through `map_local`)."""
  return batching if isinstance(batching, Placement) else Placement(1, batching)
