"""Task-incremental splits: T tasks of `classes_per_task` classes each.

Shared by CIFAR-100 (20 x 5) and TinyImageNet (40 x 5). One generator,
`np.random.default_rng(seed)`, draws in this order: the class order
(`permutation(num_classes)`, so the order is exactly
`np.random.default_rng(seed).permutation(num_classes)`), then a shuffle of each
used class's training indices (class by class, in class-order order), then a
shuffle of each task's samples. The first `int(k * val_fraction)` shuffled
indices of a class are held out for validation, as the official
`_split_per_class`; k is the smallest per-class count (500 for CIFAR-100), so
all tasks have the same static shape. Task t's classes order[5t:5t+5] get output
indices 5t..5t+4.

`class_order='official'` takes the class order of the official loader instead
(`random.seed(seed); random.shuffle(list(range(num_classes)))`, Python's
generator), so each seed's tasks hold the official run's classes; the samples
drawn within the classes and the validation draw still come from NumPy.
"""
from __future__ import annotations

import random
from typing import Optional

import numpy as np

from lamaml_jax.data.benchmark import Augment, Benchmark, Preprocess


def _min_count(y: np.ndarray, classes: np.ndarray, what: str) -> int:
  k = int(min(np.sum(y == c) for c in classes))
  if k == 0:
    raise ValueError(f"Some class has no {what} examples; cannot build tasks.")
  return k


def make_benchmark(*, name: str, train: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], num_classes: int,
                   classes_per_task: int, seed: int,
                   num_tasks: Optional[int] = None,
                   samples_per_task: Optional[int] = None,
                   val_fraction: float = 0.1,
                   preprocess: Preprocess, augment: Optional[Augment] = None,
                   info: Optional[dict] = None,
                   class_order: str = "numpy") -> Benchmark:
  """Builds the benchmark from whole splits (x [N, ...] uint8, y [N] class ids).

  Returns train [T, n, ...], val [T, v, ...] (None if v == 0), test [T, m, ...],
  labels int32 in [0, num_classes).
  """
  max_tasks = num_classes // classes_per_task
  num_tasks = max_tasks if num_tasks is None else num_tasks
  if not 1 <= num_tasks <= max_tasks:
    raise ValueError(f"{name}: num_tasks={num_tasks}, but the dataset allows "
                     f"at most {max_tasks} tasks of {classes_per_task} classes.")
  (x_tr, y_tr), (x_te, y_te) = train, test
  rng = np.random.default_rng(seed)
  order = rng.permutation(num_classes)  # drawn in both modes: same later draws
  if class_order == "official":
    official = list(range(num_classes))
    random.Random(seed).shuffle(official)  # = random.seed(seed); random.shuffle
    order = np.asarray(official)
  elif class_order != "numpy":
    raise ValueError(f"class_order must be 'numpy' or 'official', got {class_order!r}.")
  used = order[:num_tasks * classes_per_task]
  out_index = np.empty(num_classes, np.int32)
  out_index[order] = np.arange(num_classes, dtype=np.int32)

  k = _min_count(y_tr, used, "training")
  n_val = int(k * val_fraction)
  k_test = _min_count(y_te, used, "test")
  tr_idx, val_idx, te_idx = [], [], []
  for c in used:
    idx = rng.permutation(np.flatnonzero(y_tr == c))[:k]
    val_idx.append(idx[:n_val])
    tr_idx.append(idx[n_val:])
    te_idx.append(np.flatnonzero(y_te == c)[:k_test])
  group = lambda parts, t: np.concatenate(
      parts[t * classes_per_task:(t + 1) * classes_per_task])
  tr = np.stack([rng.permutation(group(tr_idx, t)) for t in range(num_tasks)])
  val = np.stack([group(val_idx, t) for t in range(num_tasks)])
  te = np.stack([group(te_idx, t) for t in range(num_tasks)])

  per_task = tr.shape[1]
  if samples_per_task is not None:
    if not 1 <= samples_per_task <= per_task:
      raise ValueError(f"{name}: samples_per_task={samples_per_task}, but a task "
                       f"has at most {per_task} training samples.")
    tr = tr[:, :samples_per_task]
  label = lambda y, idx: out_index[y[idx]]
  return Benchmark(
      name=name, train_x=x_tr[tr], train_y=label(y_tr, tr),
      test_x=x_te[te], test_y=label(y_te, te), num_outputs=num_classes,
      classes_per_task=classes_per_task, preprocess=preprocess, augment=augment,
      val_x=x_tr[val] if n_val else None, val_y=label(y_tr, val) if n_val else None,
      info={**(info or {}), "seed": seed, "class_order": order.tolist(),
            "class_order_source": class_order,
            "num_tasks": num_tasks, "val_fraction": val_fraction})
