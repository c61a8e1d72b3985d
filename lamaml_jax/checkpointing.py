"""Checkpoints of a run with orbax: learner state, stream position, accuracy rows.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so the newest step it lists is always whole; unfinished temporaries
left by a killed process are removed on the next start.

Saves are asynchronous: `save` copies the tree to host memory (so the caller may
donate or overwrite its arrays at once) and a background thread writes it while
training goes on; the next `save` and `close` wait for that write (BUILD.md,
"Measurements behind the design", has what that saves).
"""
from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored."""


class _DropUnretrievedTaskErrors(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Task exception was never retrieved")


def _silence_late_tensorstore_callbacks() -> None:
  """Drops the "Event loop is closed" noise of a failed restore.

  When one array of a checkpoint cannot be read, orbax's event loop ends while
  TensorStore still completes the other reads; each completion then fails to
  reach the closed loop and is reported through `sys.unraisablehook`, printing
  dozens of tracebacks around the one clear error. The reads that failed too are
  logged by asyncio as "Task exception was never retrieved" when their tasks are
  collected (sometimes, depending on timing). Only those two kinds are dropped.
  """
  asyncio_log = logging.getLogger("asyncio")
  if not any(isinstance(f, _DropUnretrievedTaskErrors) for f in asyncio_log.filters):
    asyncio_log.addFilter(_DropUnretrievedTaskErrors())
  previous = sys.unraisablehook
  if getattr(previous, "_drops_closed_loop_callbacks", False):
    return

  def hook(unraisable):
    e = unraisable.exc_value
    if not (isinstance(e, RuntimeError) and str(e) == "Event loop is closed"):
      previous(unraisable)

  hook._drops_closed_loop_callbacks = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


class Checkpointer:
  """Save/restore of one pytree per step under `directory`."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=True))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, item: Any) -> None:
    """Writes `item` (a pytree of arrays and Python scalars) as checkpoint `step`;
    returns once `item` is copied, before the write ends."""
    self._manager.wait_until_finished()  # one write at a time
    # Own copies (np.asarray of a CPU array may alias it): the caller may donate next.
    host = jax.tree_util.tree_map(
        lambda a: np.array(a) if isinstance(a, (jax.Array, np.ndarray)) else a, item)
    self._manager.save(step, args=ocp.args.StandardSave(host), force=True)

  def restore(self, template: Any, step: Optional[int] = None) -> Any:
    """Restores checkpoint `step` (default: newest) into the structure of `template`.

    Raises:
      CheckpointError: unreadable or structurally different checkpoint; the message
        names the directory and how to start afresh.
    """
    step = self.latest_step() if step is None else step
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    _silence_late_tensorstore_callbacks()
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types; all mean "cannot resume".
      # TensorStore appends its whole JSON spec (kilobytes) to the readable part.
      detail = re.split(r"\s*\[tensorstore_spec=|\s*See full TensorStore details",
                        f"{type(e).__name__}: {e}")[0]
      if len(detail) > 600:
        detail = detail[:600] + " ..."
      raise CheckpointError(
          f"Cannot restore checkpoint {step} in {self.directory}: "
          f"{detail}. The run was not restarted. Delete that step's "
          "directory to resume from an older checkpoint, or pass --overwrite to "
          "start the run afresh.") from e

  def close(self) -> None:
    """Waits for a pending write, then releases orbax's resources (idempotent)."""
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()
      self._manager = None

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
