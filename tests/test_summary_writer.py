"""Tests for lamaml_jax.summary_writer: events are read back from disk."""
import glob
import os
import struct

import numpy as np
import pytest

from lamaml_jax import summary_writer

try:  # Prefer TensorBoard's own reader when it is installed.
  from tensorboard.backend.event_processing import event_accumulator
except ImportError:
  event_accumulator = None


def _read_records(path):
  """Parses a TFRecord file: [uint64 len][uint32 crc(len)][data][uint32 crc(data)]."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  from tensorboardX.record_writer import masked_crc32c  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    data = f.read()
  events, pos = [], 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
    assert header_crc == masked_crc32c(header)
    body = data[pos + 12:pos + 12 + length]
    assert len(body) == length, "truncated record"
    (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
    assert body_crc == masked_crc32c(body)
    event = event_pb2.Event()
    event.ParseFromString(body)
    events.append(event)
    pos += 16 + length
  return events


def _event_files(logdir):
  return sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))


def _read_scalars(logdir):
  """{tag: [(step, value), ...]} over every event file in `logdir`."""
  out = {}
  for path in _event_files(logdir):
    for event in _read_records(path):
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return {tag: sorted(v) for tag, v in out.items()}


def test_scalars_round_trip(tmp_path):
  logdir = str(tmp_path / "tb")
  with summary_writer.SummaryWriter(logdir) as w:
    w.scalar("train/loss", 0.5, step=1)
    w.scalar("train/loss", np.float32(0.25), step=np.int64(2))
    w.scalars({"eval/ra": np.float64(0.75), "eval/bti": -0.125}, step=3)
  files = _event_files(logdir)
  assert len(files) == 1
  events = _read_records(files[0])
  assert events[0].file_version == "brain.Event:2"
  assert _read_scalars(logdir) == {
      "train/loss": [(1, 0.5), (2, 0.25)],
      "eval/ra": [(3, 0.75)],
      "eval/bti": [(3, -0.125)],
  }


def test_flush_makes_events_readable_before_close(tmp_path):
  logdir = str(tmp_path)
  w = summary_writer.SummaryWriter(logdir)
  for step in range(50):
    w.scalar("x", step * 0.5, step)
  w.flush()
  assert _read_scalars(logdir) == {"x": [(s, s * 0.5) for s in range(50)]}
  w.close()
  w.close()  # Idempotent.


def test_reopen_adds_a_file_and_purge_step(tmp_path):
  logdir = str(tmp_path)
  with summary_writer.SummaryWriter(logdir) as w:
    w.scalar("acc", 0.5, 0)
    w.scalar("acc", 0.75, 1)
  with summary_writer.SummaryWriter(logdir, purge_step=1) as w2:  # Same second.
    w2.scalar("acc", 0.875, 1)
  assert len(_event_files(logdir)) == 2
  assert w.path != w2.path
  assert _read_scalars(logdir) == {"acc": [(0, 0.5), (1, 0.75), (1, 0.875)]}
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  starts = [e.step for e in _read_records(w2.path)
            if e.HasField("session_log")
            and e.session_log.status == event_pb2.SessionLog.START]
  assert starts == [1]


@pytest.mark.skipif(event_accumulator is None, reason="tensorboard not installed")
def test_event_accumulator_reads_scalars(tmp_path):
  with summary_writer.SummaryWriter(tmp_path) as w:
    w.scalars({"a": 1.5, "b": 2.5}, step=7)
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars("a")] == [(7, 1.5)]
  assert [(e.step, e.value) for e in acc.Scalars("b")] == [(7, 2.5)]
