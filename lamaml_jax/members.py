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
moves data with `put`/`shared` (data several members read, a seed's test set,
as per-device `blocks`) and drops the padding with `unpad`. The mesh may span
several processes (`distributed`): each then builds and places only its own
devices' members (`local_members`, `put_local`) and reads results back whole
with `fetch`.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from lamaml_jax import distributed

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


def map_local(fn: Callable, batching: str, per_device: int = 0) -> Callable:
  """Maps `fn` over the leading member axis of all its arguments but the last
  `per_device` (passed whole to every member), on one device.

  'vmap' vectorises the members (what pays on GPU/TPU); 'map' runs them one after
  another inside the program (`lax.map`), so each member computes bit for bit what
  a single-member run computes: XLA:CPU's batched matmuls round differently from
  unbatched ones, and training amplifies those last bits.
  """
  if batching not in BATCHINGS:
    raise ValueError(f"member batching must be 'vmap' or 'map', got {batching!r}.")

  def mapped(*args):
    split = len(args) - per_device
    args, whole = args[:split], args[split:]
    one = lambda *a: fn(*a, *whole)
    if jax.tree_util.tree_leaves(args)[0].shape[0] == 1:
      # One member: run it unwrapped (a size-1 map or vmap slows XLA:CPU down;
      # BUILD.md).
      out = one(*jax.tree_util.tree_map(lambda a: a[0], args))
      return jax.tree_util.tree_map(lambda a: a[None], out)
    if batching == "vmap":
      return jax.vmap(one)(*args)
    return jax.lax.map(lambda a: one(*a), args)

  return mapped


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where a run's M members live.

  Members are split into equal contiguous blocks, block d on `devices[d]`; with
  several processes (`distributed`) the devices are all processes' (in process
  order), and each process holds, builds and feeds only its own devices' blocks
  (`local_members`).

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
    them), never more devices than members on one process; several processes
    use every device (each must hold a block: M is padded up to the device count
    when it is smaller). 'auto' batching: map on CPU, vmap elsewhere.

    Raises:
      ValueError: unknown batching, or a device count that cannot be used.
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
    if len({d.process_index for d in devices}) > 1:
      if num_devices not in (0, len(devices)):
        raise ValueError(
            f"member_devices={num_devices}, but a run over several processes uses "
            f"all {len(devices)} of their devices: pass 0.")
      return cls(num_members, batching, tuple(devices))
    n = min(num_devices or len(devices), num_members)
    return cls(num_members, batching, tuple(devices[:n]) if n > 1 else ())

  @property
  def num_devices(self) -> int:
    return max(len(self.devices), 1)

  @property
  def padded(self) -> int:
    """M rounded up to a multiple of the device count."""
    return -(-self.num_members // self.num_devices) * self.num_devices

  @property
  def per_device(self) -> int:
    """Members in each device's block."""
    return self.padded // self.num_devices

  @functools.cached_property
  def multiprocess(self) -> bool:
    """Whether other processes hold some of the devices."""
    return any(d.process_index != jax.process_index() for d in self.devices)

  @functools.cached_property
  def local_devices(self) -> list[int]:
    """Indices (into `devices`) of this process's devices; [0] without a mesh."""
    if not self.devices:
      return [0]
    local = [i for i, d in enumerate(self.devices)
             if d.process_index == jax.process_index()]
    if local != list(range(local[0], local[-1] + 1)):
      raise ValueError(f"this process's devices are not contiguous in {self.devices}.")
    return local

  @property
  def local_members(self) -> range:
    """The padded members on this process's devices (all of them on one process)."""
    b = self.per_device
    return range(self.local_devices[0] * b, (self.local_devices[-1] + 1) * b)

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

  def map(self, fn: Callable, per_device: int = 0) -> Callable:
    """`fn` of one member mapped over the leading member axis of every argument
    (padded M) but the last `per_device`: those are device blocks (`put_blocks`),
    each device's block passed whole to its members. Values that `fn` closes over
    are the same on every device."""
    local = map_local(fn, self.batching, per_device)
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

  def _assemble(self, tree, total: int):
    """Arrays holding this process's rows of a leading axis of `total` rows (all
    of them on one process), placed along the member axis."""
    sharding = self._sharding(False)
    if not self.multiprocess:
      return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(
        lambda a: jax.make_array_from_process_local_data(
            sharding, np.asarray(a), (total, *a.shape[1:])), tree)

  def put(self, tree):
    """Host arrays with a leading (padded) member axis onto the members' devices
    (with several processes, each contributes its `local_members` rows)."""
    if self.multiprocess:
      rows = self.local_members
      tree = jax.tree_util.tree_map(lambda a: np.asarray(a)[rows.start:rows.stop], tree)
    return self._assemble(tree, self.padded)

  def put_local(self, tree):
    """Like `put`, from this process's `local_members` rows only (all rows on one
    process): what a process builds of the members' data."""
    return self._assemble(tree, self.padded)

  def shared(self, tree):
    """Arrays every member reads (scalars): on every device. Every process must
    pass the same values."""
    return jax.device_put(tree, self._sharding(True))

  def fetch(self, tree):
    """Host (NumPy) copies of the global arrays in `tree`, whole on every process."""
    return distributed.allgather(tree) if self.multiprocess else jax.device_get(tree)

  def gather(self, tree):
    """The M real members of `tree`, whole on this process: device arrays on one
    process (no copy), host arrays gathered from all of them otherwise."""
    return self.unpad(self.fetch(tree) if self.multiprocess else tree)

  def blocks(self, keys: Sequence[Any]) -> tuple[list[list], np.ndarray]:
    """Per-device tables of data that several members share (a seed's test set).

    Args:
      keys: one per padded member, what it reads (its seed).
    Returns:
      (tables, index): per device, the sorted distinct keys of its members, padded
      to the longest table with its last key; and [padded] int32, each member's
      row in its device's table. Without a mesh: one table of every key.
    """
    if len(keys) != self.padded:
      raise ValueError(f"{len(keys)} keys for {self.padded} (padded) members.")
    b = self.per_device
    tables = [sorted(set(keys[d * b:(d + 1) * b])) for d in range(self.num_devices)]
    width = max(len(t) for t in tables)
    tables = [t + [t[-1]] * (width - len(t)) for t in tables]
    index = np.asarray([tables[i // b].index(k) for i, k in enumerate(keys)], np.int32)
    return tables, index

  def put_blocks(self, tables: Sequence[list], make: Callable[[list], Any]):
    """Device d's block, `make(tables[d])` (arrays with a leading axis of the
    table's width), on device d; each process makes only its devices' blocks.
    Arguments of a `map(..., per_device=k)` program."""
    local = [make(tables[d]) for d in self.local_devices]
    if self.mesh is None:
      return jax.device_put(local[0])
    stacked = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *local)
    return self._assemble(stacked, self.num_devices * len(tables[0]))

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
