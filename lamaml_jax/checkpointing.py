"""Checkpoints of a run with orbax: learner state, stream position, accuracy rows.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so the newest step it lists is always whole; unfinished temporaries
left by a killed process are removed on the next start.

Each checkpoint carries a SHA-256 digest of what was saved (`tree_digest`),
checked after every restore: a flipped bit or a truncated file is found, the
checkpoint is set aside (moved, not deleted) and the newest older one that
verifies is used instead. Restored corruption is never trained on.

Saves are asynchronous: `save` copies the tree to host memory (so the caller may
donate or overwrite its arrays at once) and a background thread writes it while
training goes on; the next `save` and `close` wait for that write (BUILD.md,
"Measurements behind the design", has what that saves).

With several processes (`distributed`) every process calls `save` and `restore`
with the same host tree; orbax writes it from the primary alone.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import sys
from typing import Any, Optional

import jax
import numpy as np

from lamaml_jax import distributed


DIGEST = "digest"  # the saved tree is {ITEM: item, DIGEST: [32] uint8}
ITEM = "item"
UNVERIFIED_PREFIX = "unverified-"  # set-aside checkpoints: <directory>/unverified-<step>


class CheckpointError(RuntimeError):
  """Checkpoints exist but none can be restored and verified."""


class _Unverified(Exception):
  """One checkpoint cannot be read, or its contents differ from its digest."""


def tree_digest(tree: Any) -> np.ndarray:
  """[32] uint8 SHA-256 over a pytree's leaves: each leaf's path, dtype, shape
  and bytes, in flattening order."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.reshape(-1).view(np.uint8))
  return np.frombuffer(h.digest(), np.uint8).copy()


def _short(e: BaseException) -> str:
  """An orbax/TensorStore error in one readable line (TensorStore appends its whole
  JSON spec, kilobytes, to the readable part)."""
  detail = re.split(r"\s*\[tensorstore_spec=|\s*See full TensorStore details",
                    f"{type(e).__name__}: {e}")[0]
  detail = " ".join(detail.split())
  return detail if len(detail) <= 300 else detail[:300] + " ..."


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


# How TensorStore words the file-system failures that `OSError`'s errno names.
_ERRNOS = (("No space left", errno.ENOSPC), ("Disk quota", errno.EDQUOT),
           ("Read-only file system", errno.EROFS), ("Permission denied", errno.EACCES))


def _as_os_error(e: Exception, path: str) -> Optional[OSError]:
  """The OSError that orbax/TensorStore's exception `e` reports, if it is one."""
  if isinstance(e, OSError):
    return e if e.filename else OSError(e.errno, e.strerror, path)
  for words, code in _ERRNOS:
    if words in str(e):
      return OSError(code, os.strerror(code), path)
  return None


class Checkpointer:
  """Save/restore of one pytree per step under `directory`.

  orbax loads when first needed (`open`): a fresh run asks `latest_step` of an
  absent or empty directory, which needs no orbax, and opens it later while
  its device is busy.

  A failed write (on `save`, which waits for the previous one, or on `close`)
  raises OSError when the file system failed (no space, read-only, permissions),
  so that the caller can say so in one line; the checkpoints written before stay.
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._max_to_keep = max_to_keep
    self._opened = None  # the CheckpointManager, once open
    self._closed = False
    if distributed.process_count() > 1:
      self.open()  # orbax's directory set-up is collective: every process, now

  def open(self) -> None:
    """Loads orbax (a few tenths of a second) and opens the directory; every
    method below opens on first use, so calling this only chooses when that
    cost is paid (train.run: while a task program runs). With several
    processes, the constructor has opened it already."""
    if self._opened is None and not self._closed:
      import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
      _silence_late_tensorstore_callbacks()
      self._opened = ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(
              max_to_keep=self._max_to_keep, create=True, cleanup_tmp_directories=True,
              enable_async_checkpointing=True))

  @property
  def _ocp(self):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    return ocp

  @property
  def _manager(self):
    self.open()
    return self._opened

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step; None if there is none (an absent
    or empty directory answers without loading orbax)."""
    if self._opened is None:
      try:
        with os.scandir(self.directory) as entries:
          if next(entries, None) is None:
            return None
      except FileNotFoundError:
        return None
    return self._manager.latest_step()

  def save(self, step: int, item: Any) -> None:
    """Writes `item` (a pytree of arrays and Python scalars) and its digest as
    checkpoint `step`; returns once `item` is copied, before the write ends."""
    # Own copies (np.asarray of a CPU array may alias it): the caller may donate next.
    host = jax.tree_util.tree_map(
        lambda a: np.array(a) if isinstance(a, (jax.Array, np.ndarray)) else a, item)
    with self._file_system_errors():
      self._manager.wait_until_finished()  # one write at a time
      self._manager.save(step, args=self._ocp.args.StandardSave(
          {ITEM: host, DIGEST: tree_digest(host)}), force=True)

  @contextlib.contextmanager
  def _file_system_errors(self):
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      os_error = _as_os_error(e, self.directory)
      if os_error is None or os_error is e:
        raise
      raise os_error from e  # the path named, TensorStore's wording mapped

  def restore(self, template: Any) -> tuple[int, Any]:
    """Restores the newest checkpoint that verifies, into the structure of `template`.

    A checkpoint that cannot be read or differs from its digest is moved to
    `<directory>/unverified-<step>` (one warning names it) and the next older
    one is tried.

    Returns:
      (step, restored tree).
    Raises:
      CheckpointError: no checkpoint verifies; nothing was moved, and the
        message says how to start afresh.
    """
    abstract = jax.tree_util.tree_map(
        self._ocp.utils.to_shape_dtype_struct,
        {ITEM: template, DIGEST: np.zeros((32,), np.uint8)})
    failed = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._restore_verified(step, abstract)
      except _Unverified as e:
        failed.append((step, str(e)))
        continue
      if failed:
        if distributed.is_primary():  # several processes: the primary moves them
          for bad, _ in failed:
            os.rename(os.path.join(self.directory, str(bad)),
                      os.path.join(self.directory, f"{UNVERIFIED_PREFIX}{bad}"))
        distributed.barrier("lamaml_jax.checkpointing.set_aside")
        self._manager.reload()
        logging.warning(
            "%s; set aside as %s, resumed from checkpoint %d.",
            "; ".join(f"Checkpoint {s} in {self.directory} {why}" for s, why in failed),
            ", ".join(f"{UNVERIFIED_PREFIX}{s}" for s, _ in failed), step)
      return step, restored
    raise CheckpointError(
        "No checkpoint in " + self.directory + " can be restored: " +
        "; ".join(f"checkpoint {s} {why}" for s, why in failed) +
        ". The run was not restarted; pass --overwrite to start the run afresh.")

  def _restore_verified(self, step: int, abstract: Any) -> Any:
    try:
      restored = self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types; all mean "cannot be read".
      raise _Unverified(f"cannot be read ({_short(e)})") from e
    if not np.array_equal(np.asarray(restored[DIGEST]), tree_digest(restored[ITEM])):
      raise _Unverified("differs from the digest written with it (a damaged file)")
    return restored[ITEM]

  def close(self) -> None:
    """Waits for a pending write, then releases orbax's resources (idempotent)."""
    self._closed = True
    if self._opened is not None:
      manager, self._opened = self._opened, None
      with self._file_system_errors():
        try:
          manager.wait_until_finished()
        finally:
          manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, exc_type, *exc) -> None:
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      if exc_type is None:
        raise  # else the error already leaving the block is the one to report
