"""tfds_source: network check, format check, no TensorFlow."""
import json
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from lamaml_jax.data import tfds_source, tinyimagenet


def test_network_reachable_on_a_local_port_and_not_on_a_closed_one():
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(1)
  port = server.getsockname()[1]
  try:
    assert tfds_source.network_reachable([f"http://127.0.0.1:{port}/x"], timeout=2)
  finally:
    server.close()
  start = time.monotonic()
  assert not tfds_source.network_reachable([f"http://127.0.0.1:{port}/x"], timeout=2)
  assert not tfds_source.network_reachable([])
  assert time.monotonic() - start < 5


def test_data_in_another_format_is_reported(tmp_path, fakes):
  manual = tmp_path / "manual"
  manual.mkdir()
  fakes.tiny_imagenet_zip(manual / tinyimagenet.ZIP_NAME, ("n1", "n2"), 1, 1)
  builder = tfds_source.make_builder(tinyimagenet.TinyImagenet, str(tmp_path))
  tfds_source.prepare(builder, manual_dir=str(manual))
  info_path = tmp_path / "tiny_imagenet" / "1.0.0" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["fileFormat"] = "tfrecord"
  info_path.write_text(json.dumps(info))
  with pytest.raises(tfds_source.DataNotFoundError, match="tfrecord"):
    tfds_source.load_split(tinyimagenet.TinyImagenet, "train", dataset="tiny_imagenet",
                           data_dir=str(tmp_path))


_NO_TF = """
import sys
from lamaml_jax.data import make_benchmark, tfds_source, tinyimagenet
data_dir, empty_dir = sys.argv[1], sys.argv[2]
tfds_source.network_reachable = lambda urls, timeout=3.0: False
bench = make_benchmark("mnist5k_rotations", seed=0, num_tasks=2)
try:
  make_benchmark("cifar100", seed=0, data_dir=empty_dir)
  raise AssertionError("expected DataNotFoundError")
except tfds_source.DataNotFoundError:
  pass
# Prepare (from the manual zip) and read back.
arrays = tfds_source.load_split(tinyimagenet.TinyImagenet, "validation",
                                dataset="tiny_imagenet", data_dir=data_dir)
assert arrays["image"].shape == (2, 64, 64, 3), arrays["image"].shape
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print("ok")
"""


def test_preparing_and_loading_never_import_tensorflow(tmp_path, fakes):
  # Where TensorFlow is absent (as here) any import of it raises; where it is
  # installed, the final check on sys.modules catches it.
  manual = tmp_path / "data" / "downloads" / "manual"
  manual.mkdir(parents=True)
  fakes.tiny_imagenet_zip(manual / tinyimagenet.ZIP_NAME, ("n1", "n2"), 1, 1)
  (tmp_path / "empty").mkdir()
  root = pathlib.Path(__file__).resolve().parents[2]
  out = subprocess.run(
      [sys.executable, "-c", _NO_TF, str(tmp_path / "data"), str(tmp_path / "empty")],
      check=True, cwd=root, capture_output=True, text=True)
  assert out.stdout.strip().endswith("ok")


def test_prepare_command_line(tmp_path, fakes):
  fakes.tiny_imagenet_zip(tmp_path / tinyimagenet.ZIP_NAME, ("n1", "n2"), 2, 1)
  root = pathlib.Path(__file__).resolve().parents[2]
  out = subprocess.run(
      [sys.executable, "-m", "lamaml_jax.data.prepare", "--dataset=tiny_imagenet",
       f"--data_dir={tmp_path / 'data'}", f"--manual_dir={tmp_path}"],
      check=True, cwd=root, capture_output=True, text=True)
  assert "Prepared tiny_imagenet 1.0.0" in out.stdout
  builder = tfds_source.make_builder(tinyimagenet.TinyImagenet, str(tmp_path / "data"))
  assert builder.is_prepared()
  assert builder.info.splits["train"].num_examples == 4
