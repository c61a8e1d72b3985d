"""Random images with the real shapes of CIFAR-100 / TinyImageNet, for speed runs.

`synthetic_cifar100` and `synthetic_tinyimagenet` go through the same class split,
preprocessing and augmentation as the real benchmarks, on uniform random pixels
(accuracies stay at chance). They need no download.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from lamaml_jax.data import cifar100, class_split, tinyimagenet
from lamaml_jax.data.benchmark import Benchmark

# name -> (module of the real benchmark, classes, image side, train / test per class)
_LIKE = {
    "synthetic_cifar100": (cifar100, 100, 32, 500, 100),
    "synthetic_tinyimagenet": (tinyimagenet, 200, 64, 500, 50),
}
NAMES = tuple(_LIKE)


def make(name: str, *, seed: int, num_tasks: Optional[int] = None,
         samples_per_task: Optional[int] = None,
         class_order: str = "numpy") -> Benchmark:
  module, classes, side, per_train, per_test = _LIKE[name]
  cpt = module.CLASSES_PER_TASK
  if num_tasks is not None and not 1 <= num_tasks <= classes // cpt:
    raise ValueError(f"{name}: num_tasks={num_tasks}, but it allows at most "
                     f"{classes // cpt} tasks of {cpt} classes.")
  rng = np.random.default_rng(12345)  # the pixels; the class order follows `seed`

  def split(per_class):
    y = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    return rng.integers(0, 256, (y.size, side, side, 3), dtype=np.uint8), y

  return class_split.make_benchmark(
      name=name, train=split(per_train), test=split(per_test), num_classes=classes,
      classes_per_task=cpt, seed=seed, num_tasks=num_tasks,
      samples_per_task=samples_per_task, val_fraction=0.1,
      class_order=class_order,
      preprocess=module.preprocess, augment=module.augment,
      info={"source": "synthetic uniform pixels"})
