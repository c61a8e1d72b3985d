"""Crash-safe file output: atomic writes and an append-only JSON-lines log.

An atomic write goes to a temporary file in the target's directory, is flushed and
fsynced, then `os.replace`d over the target, so a reader (or a resumed run) sees
either the old file or the complete new one, never a torn one. Parent directories
are created as needed.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from typing import Any, IO, Iterator, Mapping, Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]

# mkstemp creates 0600 files; atomic writes get the permissions open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


def to_jsonable(obj: Any) -> Any:
  """Recursively converts numpy (and jax) scalars/arrays to Python types, and
  NaN and infinities to None, so that the result is strict JSON (`null`; a
  strict parser rejects the `NaN` Python's json would write).

  Dicts keep their order (numpy-scalar keys become Python scalars; json turns them
  into strings), tuples become lists. Other objects are returned unchanged, so
  json raises its usual TypeError on them.
  """
  if isinstance(obj, Mapping):
    return {to_jsonable(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray) or (hasattr(obj, "__array__") and not isinstance(
      obj, (str, bytes, np.generic))):
    return to_jsonable(np.asarray(obj).tolist())  # jax.Array and friends.
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def _fsync_dir(dirname: str) -> None:
  """Makes a rename durable; a no-op where directories cannot be opened."""
  try:
    fd = os.open(dirname, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def _atomic_open(path: PathLike, mode: str, **kwargs) -> Iterator[IO]:
  """Yields a temp file next to `path`; on clean exit it replaces `path`.

  On any exception the temp file is removed and `path` is left untouched.
  """
  path = os.fspath(path)
  dirname = os.path.dirname(os.path.abspath(path))
  os.makedirs(dirname, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=dirname, prefix=f".{os.path.basename(path)}.",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, mode, **kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  _fsync_dir(dirname)


def atomic_write_text(path: PathLike, text: str) -> None:
  """Atomically writes `text` (UTF-8) to `path`."""
  with _atomic_open(path, "w", encoding="utf-8") as f:
    f.write(text)


def atomic_write_json(path: PathLike, obj: Any) -> None:
  """Atomically writes `obj` as JSON (indent 2, trailing newline) to `path`.

  Numpy/jax scalars and arrays are converted to Python types, NaN and infinities
  to `null` (`to_jsonable`): the file is strict JSON.
  """
  text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
  with _atomic_open(path, "w", encoding="utf-8") as f:
    f.write(text)


def atomic_savefig(fig, path: PathLike, **savefig_kwargs) -> None:
  """Atomically saves a matplotlib figure; the format defaults to `path`'s extension."""
  fmt = savefig_kwargs.pop("format", None)
  if fmt is None:
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
  with _atomic_open(path, "wb") as f:
    fig.savefig(f, format=fmt, **savefig_kwargs)


class JsonlWriter:
  """Appends one JSON object per line to a file, flushing after each record.

  A record counts as written once its newline is: on (re)opening, an unterminated
  trailing line (a record torn by a crash) is truncated away so that appending on
  resume never glues two records together. Use as a context manager or call
  `close()`.
  """

  def __init__(self, path: PathLike):
    self.path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    _truncate_torn_tail(self.path)
    self._file = open(self.path, "a", encoding="utf-8")

  def write(self, record: Mapping[str, Any]) -> None:
    """Appends `record` (a mapping; numpy values converted) and flushes."""
    if not isinstance(record, Mapping):
      raise TypeError(f"JsonlWriter records must be mappings, got {type(record)}.")
    # Serialise fully before touching the file; strict JSON (`to_jsonable`).
    line = json.dumps(to_jsonable(record), allow_nan=False)
    self._file.write(line + "\n")
    self._file.flush()

  def flush(self) -> None:
    """Flushes and fsyncs the file."""
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    if not self._file.closed:
      self.flush()
      self._file.close()

  def __enter__(self) -> "JsonlWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _truncate_torn_tail(path: str) -> None:
  """Drops the bytes after the last newline of `path`, if any."""
  try:
    f = open(path, "r+b")
  except FileNotFoundError:
    return
  with f:
    size = f.seek(0, os.SEEK_END)
    if size == 0:
      return
    pos, chunk = size, 4096
    while pos > 0:
      start = max(0, pos - chunk)
      f.seek(start)
      data = f.read(pos - start)
      if pos == size and data.endswith(b"\n"):
        return
      i = data.rfind(b"\n")
      if i >= 0:
        f.truncate(start + i + 1)
        return
      pos = start
    f.truncate(0)


def read_jsonl(path: PathLike) -> list[dict]:
  """Reads the complete (newline-terminated) records of a JSON-lines file."""
  with open(path, "r", encoding="utf-8") as f:
    lines = f.read().split("\n")
  return [json.loads(line) for line in lines[:-1] if line.strip()]


class Discard:
  """A writer that writes nothing: what a run's other processes hold in place of
  the primary's `JsonlWriter` and `summary_writer.SummaryWriter`."""

  def write(self, record: Mapping[str, Any]) -> None:
    del record

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    del values, step

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass

  def __enter__(self) -> "Discard":
    return self

  def __exit__(self, *exc) -> None:
    pass


class WorkdirLockedError(RuntimeError):
  """Another process holds the workdir's lock."""


class WorkdirLock:
  """An exclusive advisory lock (`fcntl.flock`) on DIR/.lock for a run's life.

  A second process asking for the same directory's lock gets WorkdirLockedError
  at once, naming the holder's PID and host (written into the lock file). The
  kernel releases the lock when the holder exits, however it exits, so a killed
  run never leaves a stale lock. flock is advisory and not honoured by every
  network file system (BUILD.md).
  """

  NAME = ".lock"

  def __init__(self, directory: PathLike):
    self.directory = os.fspath(directory)
    self.path = os.path.join(self.directory, self.NAME)
    self._fd: Optional[int] = None

  def __enter__(self) -> "WorkdirLock":
    import fcntl  # pylint: disable=g-import-not-at-top  (POSIX only)
    import socket  # pylint: disable=g-import-not-at-top
    os.makedirs(self.directory, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "unknown"
      os.close(fd)
      raise WorkdirLockedError(
          f"{self.directory} is in use by another run (process {holder}); wait for "
          "it to finish or use another --workdir.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.close(self._fd)  # releases the flock
      self._fd = None


_FIXES = {
    errno.ENOSPC: "no space is left on its device: free some space (or move the run "
                  "to another disk with --workdir), then rerun the same command to "
                  "resume from the newest checkpoint",
    errno.EDQUOT: "the disk quota is used up: free some space, then rerun the same "
                  "command to resume from the newest checkpoint",
    errno.EROFS: "its file system is read-only: pass a --workdir on a writable one",
    errno.EACCES: "permission denied: pass a --workdir you can write to, or fix the "
                  "permissions of that path",
    errno.EPERM: "operation not permitted: pass a --workdir you can write to, or fix "
                 "the permissions of that path",
    errno.ENOTDIR: "a part of that path is a file, not a directory: choose another "
                   "--workdir",
    errno.EISDIR: "it is a directory where a file was expected: remove it or choose "
                  "another --workdir",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter --workdir",
}


def file_system_error_message(e: OSError) -> str:
  """One line for a failed file operation: the path, what went wrong, the fix."""
  path = e.filename if e.filename is not None else "a file of the run"
  fix = _FIXES.get(e.errno) or (
      f"{e.strerror or e}: check that path and its disk, then rerun the same command "
      "(it resumes from the newest checkpoint)")
  return f"cannot use {path}: {fix}."
