"""One run over several processes (hosts): JAX's multi-controller runtime.

Every process runs the same program on its own devices (`jax.devices()` lists
all processes' devices once `initialize` has run); the members are sharded over
all of them (`members.Placement`). What the processes must agree on, each
program's length and whether to checkpoint or stop, is decided here in one
collective (`agree`); what only one of them may do, writing results, logs,
events, plots and taking the workdir lock, is done by the primary (process 0,
`is_primary`). Orbax writes checkpoints collectively: every process calls save
with the same host tree and the primary writes it.

Coordinates come from the cluster when it provides them (SLURM's environment,
Cloud TPU's metadata: `jax.distributed.initialize()` detects both) or from the
command line (`--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`).
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """Joins this process to the run's others; call before anything uses JAX.

  With no arguments the coordinates are detected (SLURM, Cloud TPU). On CPU the
  processes talk through gloo (XLA:CPU has no collectives of its own).

  Raises:
    ValueError: only some of the three coordinates given, or they do not fit.
  """
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise ValueError(
        "--coordinator_address, --num_processes and --process_id go together: pass "
        "all three, or none of them to detect them on SLURM or a Cloud TPU VM.")
  if all(given) and not (num_processes >= 1 and 0 <= process_id < num_processes):
    raise ValueError(f"--process_id must be in [0, --num_processes), got process_id="
                     f"{process_id}, num_processes={num_processes}.")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def process_count() -> int:
  return jax.process_count()


def is_primary() -> bool:
  """Whether this process writes the run's outputs (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier of this name (none alone)."""
  if process_count() > 1:
    multihost_utils.sync_global_devices(name)


def allgather(tree):
  """Host (NumPy) copies of `tree`'s arrays, whole, on every process: global
  arrays gathered from their shards, host arrays stacked along their leading axis
  in process order (one collective)."""
  return multihost_utils.process_allgather(tree, tiled=True)


def agree(values: Sequence[int]) -> np.ndarray:
  """[processes, k] int32: every process's `values`, the same on all of them
  (one collective; a single process gets its own row back)."""
  row = np.asarray(values, np.int32)[None]
  if process_count() == 1:
    return row
  return np.asarray(allgather(row))


def gather_json(value: Any) -> list:
  """Every process's JSON-serialisable `value`, in process order, on all of them."""
  encoded = np.frombuffer(json.dumps(value).encode(), np.uint8)
  if process_count() == 1:
    return [value]
  sizes = agree([encoded.size])[:, 0]
  padded = np.zeros((1, int(sizes.max())), np.uint8)
  padded[0, :encoded.size] = encoded
  rows = np.asarray(allgather(padded))
  return [json.loads(bytes(row[:n]).decode()) for row, n in zip(rows, sizes)]
