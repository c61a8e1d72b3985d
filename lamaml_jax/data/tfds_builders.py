"""TensorFlow-free ports of TFDS's 'mnist' and 'cifar100' builders.

TFDS's own builders need TensorFlow to prepare data (archive extraction and file
reads go through `tf.io.gfile`, NumPy images are PNG-encoded by `tf.image`).
These subclasses keep the parent's name, version, features, URLs and checksums,
so they write the same `DATA_DIR/<name>/<version>/` layout that TFDS reads (and
read data prepared by TFDS itself as array_record); only the generation differs:
archives are read with `gzip`/`tarfile` and images are PNG-encoded with PIL
(identical pixels). Neither is registered under a name (`skip_registration`).
"""
from __future__ import annotations

import gzip
import io
import tarfile
import urllib.parse

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import cifar as tfds_cifar
from tensorflow_datasets.image_classification import mnist as tfds_mnist


def png(image: np.ndarray) -> bytes:
  """[H, W, C] uint8 (C in {1, 3}) -> PNG bytes."""
  buf = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, "PNG")
  return buf.getvalue()


class Mnist(tfds_mnist.MNIST, skip_registration=True):
  """TFDS 'mnist' 3.0.1 (train 60,000 / test 10,000, 28x28x1), prepared without TF."""

  name = "mnist"
  FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
           "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls):
    return tfds_mnist.MNIST.url_infos

  @classmethod
  def urls(cls) -> list[str]:
    return [urllib.parse.urljoin(cls.URL, f) for fs in cls.FILES.values() for f in fs]

  def _split_generators(self, dl_manager):
    paths = dl_manager.download({k: [urllib.parse.urljoin(self.URL, f) for f in fs]
                                 for k, fs in self.FILES.items()})
    return {split: self._generate_examples(*paths[split]) for split in self.FILES}

  def _generate_examples(self, images_path, labels_path):
    with gzip.open(images_path, "rb") as f:
      images = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28, 1)
    with gzip.open(labels_path, "rb") as f:
      labels = np.frombuffer(f.read()[8:], np.uint8).astype(np.int64)
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": png(image), "label": label}


class Cifar100(tfds_cifar.Cifar100, skip_registration=True):
  """TFDS 'cifar100' 3.0.2 (train 50,000 / test 10,000, 32x32x3), prepared without TF."""

  name = "cifar100"

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls):
    return tfds_cifar.Cifar100.url_infos

  @classmethod
  def urls(cls) -> list[str]:
    # `_cifar_info` is an instance property that only reads `self.name`.
    return [tfds_cifar.Cifar100._cifar_info.fget(cls).url]  # pylint: disable=protected-access

  def _split_generators(self, dl_manager):
    info = self._cifar_info
    archive = dl_manager.download(info.url)
    with tarfile.open(archive, "r:gz") as tar:
      read = lambda f: tar.extractfile(info.prefix + f).read()
      for key, label_file in zip(info.label_keys, info.label_files):
        names = [n for n in read(label_file).decode().split("\n") if n]
        self.info.features[key].names = names
      data = {"train": [read(f) for f in info.train_files],
              "test": [read(f) for f in info.test_files]}
    return {split: self._generate_examples(f"{split}_", blobs)
            for split, blobs in data.items()}

  def _generate_examples(self, split_prefix, blobs):
    keys = self._cifar_info.label_keys
    size = len(keys) + 3072
    index = 0
    for blob in blobs:
      records = np.frombuffer(blob, np.uint8).reshape(-1, size)
      for rec in records:
        image = rec[len(keys):].reshape(3, 32, 32).transpose(1, 2, 0)
        example = {k: int(v) for k, v in zip(keys, rec[:len(keys)])}
        example.update(id=f"{split_prefix}{index:05d}", image=png(image))
        yield index, example
        index += 1
