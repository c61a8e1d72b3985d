"""Checkpoints verify on restore: damage falls back to an older checkpoint."""
import hashlib
import logging
import os
import re
import subprocess
import sys

import chex
import numpy as np
import pytest

from lamaml_jax import checkpointing


def _tree(value: float):
  """Incompressible weights, so that a flipped bit in a data file hits them."""
  w = np.random.default_rng(int(value)).normal(size=(64, 33)).astype(np.float32)
  return {"state": {"w": w,
                    "step": np.asarray(7, np.int32)},
          "progress": {"acc": np.linspace(0.0, 1.0, 12).reshape(3, 4) * value}}


def _save_steps(directory, steps, keep=3):
  with checkpointing.Checkpointer(str(directory), max_to_keep=keep) as ckpt:
    for s in steps:
      ckpt.save(s, _tree(float(s)))


def _data_files(directory, step):
  """The array data files of checkpoint `step` (OCDBT's d/ directories)."""
  out = []
  for dirpath, _, names in os.walk(os.path.join(directory, str(step))):
    if os.path.basename(dirpath) == "d":
      out += [os.path.join(dirpath, n) for n in names]
  assert out
  return out


def test_digest_is_sha256_of_paths_dtypes_shapes_and_bytes():
  a = np.arange(6, dtype=np.int16).reshape(2, 3)
  want = hashlib.sha256(b"['a']|<i2|(2, 3)|" + a.tobytes()).digest()
  assert bytes(checkpointing.tree_digest({"a": a})) == want


@pytest.mark.parametrize("change", ["bit", "dtype", "shape", "key"])
def test_digest_changes_with_any_change(change):
  tree = {"a": np.zeros((4, 2), np.float32)}
  other = {"bit": lambda: {"a": np.frombuffer(
               (np.zeros(8, np.uint32) | np.eye(1, 8, 5, dtype=np.uint32)[0]).tobytes(),
               np.float32).reshape(4, 2)},
           "dtype": lambda: {"a": np.zeros((4, 2), np.int32)},
           "shape": lambda: {"a": np.zeros((2, 4), np.float32)},
           "key": lambda: {"b": np.zeros((4, 2), np.float32)}}[change]()
  assert not np.array_equal(checkpointing.tree_digest(tree),
                            checkpointing.tree_digest(other))


def test_restore_returns_the_newest_step(tmp_path):
  _save_steps(tmp_path, [10, 20])
  with checkpointing.Checkpointer(str(tmp_path)) as ckpt:
    step, tree = ckpt.restore(_tree(0.0))
  assert step == 20
  chex.assert_trees_all_equal(tree, _tree(20.0))


@pytest.mark.parametrize("where", [0.2, 0.5, 0.8])
def test_a_flipped_bit_falls_back_to_the_older_checkpoint(tmp_path, caplog, where):
  """Orbax reads a flipped bit in array data without complaint; the digest finds it."""
  _save_steps(tmp_path, [10, 20])
  path = max(_data_files(str(tmp_path), 20), key=os.path.getsize)  # the weights'
  data = bytearray(open(path, "rb").read())
  data[int(where * len(data))] ^= 0x10
  open(path, "wb").write(bytes(data))
  with checkpointing.Checkpointer(str(tmp_path)) as ckpt, caplog.at_level(logging.WARNING):
    step, tree = ckpt.restore(_tree(0.0))
    chex.assert_trees_all_equal(tree, _tree(10.0))
    assert step == 10
    assert ckpt.latest_step() == 10
    ckpt.save(20, _tree(21.0))  # the step number is free again
  assert re.search(r"Checkpoint 20 in \S+ differs from the digest written with it.*; "
                   "set aside as unverified-20, resumed from checkpoint 10", caplog.text)
  assert os.path.isdir(tmp_path / "unverified-20")  # set aside, not deleted
  with checkpointing.Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.restore(_tree(0.0))[0] == 20


def test_contents_that_differ_from_their_digest_are_not_restored(tmp_path, monkeypatch,
                                                                 caplog):
  _save_steps(tmp_path, [10])
  real = checkpointing.tree_digest
  monkeypatch.setattr(checkpointing, "tree_digest", lambda t: real(t) ^ np.uint8(1))
  _save_steps(tmp_path, [20])  # readable, but not what its digest says
  monkeypatch.undo()
  with checkpointing.Checkpointer(str(tmp_path)) as ckpt, caplog.at_level(logging.WARNING):
    step, _ = ckpt.restore(_tree(0.0))
  assert step == 10
  assert "Checkpoint 20" in caplog.text and "differs from the digest" in caplog.text


def test_when_none_verifies_the_error_names_each_and_nothing_moves(tmp_path):
  _save_steps(tmp_path, [10, 20])
  for step in (10, 20):
    for path in _data_files(str(tmp_path), step):
      with open(path, "r+b") as f:
        f.truncate(max(1, os.path.getsize(path) // 2))
  with checkpointing.Checkpointer(str(tmp_path)) as ckpt:
    with pytest.raises(checkpointing.CheckpointError,
                       match=r"No checkpoint in \S+ can be restored: checkpoint 20 .*; "
                       r"checkpoint 10 .*pass --overwrite to start the run afresh"):
      ckpt.restore(_tree(0.0))
  assert sorted(os.listdir(tmp_path)) == ["10", "20"]


_FRESH_DIRECTORY = """
import sys
from lamaml_jax import checkpointing
ckpt = checkpointing.Checkpointer(sys.argv[1])
assert ckpt.latest_step() is None
assert "orbax.checkpoint" not in sys.modules, "a fresh run should not wait for orbax"
ckpt.save(5, {"w": [1.0, 2.0]})
ckpt.close()
print(checkpointing.Checkpointer(sys.argv[1]).latest_step())
"""


@pytest.mark.parametrize("existing", [False, True])
def test_a_fresh_directory_has_no_checkpoint_without_loading_orbax(existing, tmp_path):
  directory = tmp_path / "checkpoints"
  if existing:
    directory.mkdir()  # empty, as a run killed before its first checkpoint leaves it
  result = subprocess.run(
      [sys.executable, "-c", _FRESH_DIRECTORY, str(directory)],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "5"
