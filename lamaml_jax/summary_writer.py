"""A tiny TensorBoard scalar writer on tensorboardX (no TensorFlow needed).

Events are written synchronously with tensorboardX's own `EventsWriter` (record
framing, CRCs) and `summary.scalar` (protos). `tensorboardX.SummaryWriter` is not
used because it queues events to a background thread and its `flush()` does not
drain that queue, so events logged before a checkpoint could be missing from disk
after `flush()`; here `flush()` means on disk (fsynced).
"""
from __future__ import annotations

import os
import time
from typing import Mapping, Optional, Union
import uuid

import numpy as np


class SummaryWriter:
  """Writes scalars to a new TensorBoard event file in `logdir`.

  Each instance opens its own event file (uniquely named), so reopening the same
  `logdir` after a restart adds a file rather than overwriting one; pass
  `purge_step` (the step the run resumes from) to have TensorBoard hide the stale
  events at or after it that the earlier file holds.
  """

  def __init__(self, logdir: Union[str, os.PathLike], purge_step: Optional[int] = None):
    # tensorboardX loads with the first writer, not at start-up: train.run opens
    # its writer while the task program compiles.
    # pylint: disable=g-import-not-at-top
    from tensorboardX import summary as tbx_summary
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto import event_pb2
    # pylint: enable=g-import-not-at-top
    self._event_pb2, self._scalar_summary = event_pb2, tbx_summary.scalar
    self.logdir = os.fspath(logdir)
    os.makedirs(self.logdir, exist_ok=True)
    self._writer = EventsWriter(os.path.join(self.logdir, "events"),
                                filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}")
    if purge_step is not None:  # As tensorboardX.SummaryWriter(purge_step=...) does.
      self._writer.write_event(event_pb2.Event(
          wall_time=time.time(), step=int(purge_step),
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._closed = False

  @property
  def path(self) -> str:
    """The event file written by this instance."""
    return self._writer._file_name  # pylint: disable=protected-access

  def scalar(self, tag: str, value, step: int) -> None:
    """Logs one scalar; `value` may be a Python, numpy or jax scalar."""
    self._writer.write_event(self._event_pb2.Event(
        wall_time=time.time(), step=int(step),
        summary=self._scalar_summary(tag, float(np.asarray(value)))))

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    """Logs each `tag: value` of `values` as its own scalar at `step`."""
    for tag, value in values.items():
      self.scalar(tag, value, step)

  def flush(self) -> None:
    """Writes everything logged so far to disk (flush + fsync)."""
    self._writer.flush()

  def close(self) -> None:
    if not self._closed:
      self._writer.close()
      self._closed = True

  def __enter__(self) -> "SummaryWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
