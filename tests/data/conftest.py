"""Fakes of the raw archives (real layouts, few images) and network switches."""
import io
import tarfile
import types
import zipfile

import numpy as np
from PIL import Image
import pytest

from lamaml_jax.data import tfds_source

TIN = "tiny-imagenet-200"


def _jpeg(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="JPEG", quality=95)
  return buf.getvalue()


def tin_value(class_index: int) -> int:
  """Grey level of every pixel of the fake images of class `class_index`."""
  return (37 * class_index + 11) % 256


def make_tiny_imagenet_zip(path, wnids, n_train, n_val, gray=()):
  """tiny-imagenet-200.zip with the real layout; images are constant per class.

  `gray` lists (wnid, i) train images stored as single-channel JPEGs.
  """
  with zipfile.ZipFile(path, "w") as z:
    z.writestr(f"{TIN}/wnids.txt", "\n".join(wnids) + "\n")
    z.writestr(f"{TIN}/words.txt", "".join(f"{w}\tthing {w}\n" for w in wnids))
    ann, v = [], 0
    for c, w in enumerate(sorted(wnids)):
      img = np.full((64, 64, 3), tin_value(c), np.uint8)
      z.writestr(f"{TIN}/train/{w}/{w}_boxes.txt", "")
      for i in range(n_train):
        data = _jpeg(img[..., 0]) if (w, i) in gray else _jpeg(img)
        z.writestr(f"{TIN}/train/{w}/images/{w}_{i}.JPEG", data)
      for _ in range(n_val):
        z.writestr(f"{TIN}/val/images/val_{v}.JPEG", _jpeg(img))
        ann.append(f"val_{v}.JPEG\t{w}\t0\t0\t63\t63")
        v += 1
    z.writestr(f"{TIN}/val/val_annotations.txt", "\n".join(ann) + "\n")
    z.writestr(f"{TIN}/test/images/test_0.JPEG", _jpeg(np.zeros((64, 64, 3), np.uint8)))


def make_cifar100_tar(path, n_train, n_test, seed=0):
  """cifar-100-binary.tar.gz; the red value of pixel (0, 0) is the fine label."""
  rng = np.random.default_rng(seed)

  def records(n):
    fine = np.repeat(np.arange(100, dtype=np.uint8), n)
    img = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
    img[:, 0] = fine
    return np.concatenate([(fine // 5)[:, None], fine[:, None], img], 1).tobytes()

  files = {"train.bin": records(n_train), "test.bin": records(n_test),
           "coarse_label_names.txt": "".join(f"c{i}\n" for i in range(20)).encode(),
           "fine_label_names.txt": "".join(f"f{i}\n" for i in range(100)).encode()}
  with tarfile.open(path, "w:gz") as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(f"cifar-100-binary/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="session")
def fakes():
  """The archive writers above, for tests (conftest is not importable by name)."""
  return types.SimpleNamespace(tiny_imagenet_zip=make_tiny_imagenet_zip,
                               cifar100_tar=make_cifar100_tar,
                               mnist_gz=make_mnist_gz, tin_value=tin_value)


@pytest.fixture
def online(monkeypatch):
  """Pretends every download host answers (downloads themselves must be faked)."""
  monkeypatch.setattr(tfds_source, "network_reachable", lambda urls, timeout=3.0: True)


@pytest.fixture
def offline(monkeypatch):
  monkeypatch.setattr(tfds_source, "network_reachable", lambda urls, timeout=3.0: False)


def make_mnist_gz(folder, n_train, n_test, seed=0):
  """The four MNIST idx .gz files; returns {file name: path}."""
  import gzip  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  paths = {}
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels  # pixel (0, 0) is the label
    for kind, header, data in (("images-idx3", 16, images), ("labels-idx1", 8, labels)):
      name = f"{prefix}-{kind}-ubyte.gz"
      paths[name] = folder / name
      with gzip.open(paths[name], "wb") as f:
        f.write(b"\0" * header + data.tobytes())
  return paths
