"""Tests for lamaml_jax.io_utils."""
import errno
import json
import os
import stat

import numpy as np
import pytest

from lamaml_jax import io_utils


def _listing(d):
  return sorted(os.listdir(d))


def test_atomic_write_text_creates_and_overwrites(tmp_path):
  path = tmp_path / "sub" / "dir" / "a.txt"  # Parents are created.
  io_utils.atomic_write_text(path, "first")
  assert path.read_text() == "first"
  io_utils.atomic_write_text(str(path), "second ü")
  assert path.read_text(encoding="utf-8") == "second ü"
  assert _listing(path.parent) == ["a.txt"]


def test_atomic_write_has_default_permissions(tmp_path):
  path = tmp_path / "a.txt"
  io_utils.atomic_write_text(path, "x")
  umask = os.umask(0)
  os.umask(umask)
  assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


class _TornFile:
  """Wraps a file so that write() writes half its data, then fails."""

  def __init__(self, f):
    self._f = f

  def write(self, data):
    self._f.write(data[:len(data) // 2])
    self._f.flush()
    raise OSError("disk full")

  def __getattr__(self, name):
    return getattr(self._f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._f.close()


@pytest.mark.parametrize("writer", ["text", "json"])
def test_torn_write_keeps_old_content(tmp_path, monkeypatch, writer):
  path = tmp_path / "results.json"
  path.write_text("old")
  real_fdopen = os.fdopen
  monkeypatch.setattr(io_utils.os, "fdopen",
                      lambda *a, **k: _TornFile(real_fdopen(*a, **k)))
  with pytest.raises(OSError, match="disk full"):
    if writer == "text":
      io_utils.atomic_write_text(path, "new content " * 100)
    else:
      io_utils.atomic_write_json(path, {"a": list(range(100))})
  assert path.read_text() == "old"
  assert _listing(tmp_path) == ["results.json"]  # No temp file left behind.


def test_serialisation_error_midway_keeps_old_content(tmp_path):
  path = tmp_path / "results.json"
  io_utils.atomic_write_json(path, {"ok": 1})
  # json.dump streams "a" out before it reaches the unserialisable object.
  with pytest.raises(TypeError):
    io_utils.atomic_write_json(path, {"a": list(range(5000)), "z": object()})
  assert json.loads(path.read_text()) == {"ok": 1}
  assert _listing(tmp_path) == ["results.json"]


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_failure_before_replace_keeps_old_content(tmp_path, monkeypatch, fail_at):
  path = tmp_path / "a.txt"
  path.write_text("old")

  def boom(*args, **kwargs):
    raise OSError(f"{fail_at} failed")

  monkeypatch.setattr(io_utils.os, fail_at, boom)
  with pytest.raises(OSError, match=fail_at):
    io_utils.atomic_write_text(path, "new")
  monkeypatch.undo()
  assert path.read_text() == "old"
  assert _listing(tmp_path) == ["a.txt"]


def test_atomic_write_json_converts_numpy(tmp_path):
  path = tmp_path / "r.json"
  obj = {
      "f32": np.float32(0.5),
      "f64": np.float64(0.25),
      "i": np.int64(4),
      "flag": np.bool_(True),
      "arr": np.arange(3, dtype=np.int32),
      "mat": np.eye(2),
      "tuple": (1, np.int8(2)),
      "nested": [{"x": np.float16(1.5)}],
      np.int64(7): "numpy key",
  }
  io_utils.atomic_write_json(path, obj)
  text = path.read_text()
  assert text.endswith("}\n")
  assert '\n  "f32": 0.5' in text  # indent=2
  assert json.loads(text) == {
      "f32": 0.5, "f64": 0.25, "i": 4, "flag": True, "arr": [0, 1, 2],
      "mat": [[1.0, 0.0], [0.0, 1.0]], "tuple": [1, 2], "nested": [{"x": 1.5}],
      "7": "numpy key"}


def _reject(constant):
  raise ValueError(f"not strict JSON: {constant}")


@pytest.mark.parametrize("bad", [float("nan"), np.float32("inf"), -np.inf])
def test_non_finite_numbers_become_null_in_strict_json(tmp_path, bad):
  """A diverged member's NaN accuracy or a std over one seed: `null`, which a
  strict parser accepts, never `NaN`/`Infinity`."""
  obj = {"ra": bad, "acc": np.array([[0.5, bad]]), "std": [bad], "ok": 1.0}
  io_utils.atomic_write_json(tmp_path / "r.json", obj)
  got = json.loads((tmp_path / "r.json").read_text(), parse_constant=_reject)
  assert got == {"ra": None, "acc": [[0.5, None]], "std": [None], "ok": 1.0}
  with io_utils.JsonlWriter(tmp_path / "m.jsonl") as w:
    w.write({"loss": bad, "step": 3})
  line = (tmp_path / "m.jsonl").read_text().splitlines()[0]
  assert json.loads(line, parse_constant=_reject) == {"loss": None, "step": 3}


def test_atomic_write_json_converts_jax_arrays(tmp_path):
  jnp = pytest.importorskip("jax.numpy")
  path = tmp_path / "r.json"
  io_utils.atomic_write_json(path, {"a": jnp.arange(3.0), "s": jnp.float32(2.0)})
  assert json.loads(path.read_text()) == {"a": [0.0, 1.0, 2.0], "s": 2.0}


def test_jsonl_round_trip_and_append_across_reopen(tmp_path):
  path = tmp_path / "logs" / "metrics.jsonl"
  with io_utils.JsonlWriter(path) as w:
    w.write({"step": 0, "loss": np.float32(1.5)})
    w.write({"step": 1, "acc": np.array([0.5, 0.25])})
    # Flushed per write: visible to another reader before close.
    assert io_utils.read_jsonl(path) == [{"step": 0, "loss": 1.5},
                                         {"step": 1, "acc": [0.5, 0.25]}]
  assert w._file.closed
  with io_utils.JsonlWriter(str(path)) as w:  # Resume: appends.
    w.write({"step": 2})
  lines = path.read_text().splitlines()
  assert [json.loads(line) for line in lines] == [
      {"step": 0, "loss": 1.5}, {"step": 1, "acc": [0.5, 0.25]}, {"step": 2}]


@pytest.mark.parametrize("tail_len", [5, 10000])
def test_jsonl_reopen_drops_torn_tail(tmp_path, tail_len):
  path = tmp_path / "m.jsonl"
  path.write_text('{"a": 1}\n{"a": 2}\n{"b": "' + "x" * tail_len)  # Crash mid-record.
  assert io_utils.read_jsonl(path) == [{"a": 1}, {"a": 2}]
  with io_utils.JsonlWriter(path) as w:
    w.write({"a": 3})
  assert path.read_text() == '{"a": 1}\n{"a": 2}\n{"a": 3}\n'


def test_jsonl_reopen_with_only_torn_record(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"a": 1')
  with io_utils.JsonlWriter(path) as w:
    w.write({"a": 2})
  assert io_utils.read_jsonl(path) == [{"a": 2}]


def test_jsonl_rejects_non_mappings_without_writing(tmp_path):
  path = tmp_path / "m.jsonl"
  with io_utils.JsonlWriter(path) as w:
    with pytest.raises(TypeError):
      w.write([1, 2])
    with pytest.raises(TypeError):
      w.write({"bad": object()})
    w.write({"ok": True})
  assert path.read_text() == '{"ok": true}\n'


@pytest.mark.parametrize("code,words", [
    (errno.ENOSPC, "no space is left on its device: free some space"),
    (errno.EROFS, "its file system is read-only: pass a --workdir on a writable one"),
    (errno.EACCES, "permission denied: pass a --workdir you can write to"),
    (errno.EIO, "Input/output error: check that path and its disk, then rerun"),
])
def test_file_system_errors_are_one_line_naming_the_path(code, words):
  message = io_utils.file_system_error_message(
      OSError(code, os.strerror(code), "/runs/x/metrics.jsonl"))
  assert message.startswith(f"cannot use /runs/x/metrics.jsonl: {words}")
  assert "\n" not in message
