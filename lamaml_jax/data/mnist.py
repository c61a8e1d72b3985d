"""Full MNIST (60,000 train / 10,000 test) from TFDS, flattened to [N, 784] uint8."""
from __future__ import annotations

from typing import Optional

import numpy as np

from lamaml_jax.data import tfds_builders, tfds_source


def load(data_dir: Optional[str] = None):
  """((x_train [60000, 784] uint8, y_train [60000] int32), (x_test, y_test))."""
  out = []
  for split in ("train", "test"):
    d = tfds_source.load_split(tfds_builders.Mnist, split, dataset="mnist",
                               data_dir=data_dir, urls=tfds_builders.Mnist.urls())
    x = d["image"].reshape(len(d["image"]), -1).astype(np.uint8)
    out.append((x, d["label"].astype(np.int32)))
  return out[0], out[1]
