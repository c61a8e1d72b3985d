"""CIFAR-100 as 20 tasks of 5 classes (task-incremental, 100 outputs).

Data: TFDS 'cifar100' read as array_record (`tfds_source`), prepared without
TensorFlow by `tfds_builders.Cifar100`. Class order, validation hold-out and
label mapping: `class_split` (order = np.random.default_rng(seed).permutation(100);
450 train / 50 val per class; task t owns outputs [5t, 5t + 5)). Test: the
CIFAR-100 test split, 100 per class, 500 per task. Images [32, 32, 3] uint8.
"""
from __future__ import annotations

from typing import Optional

from lamaml_jax.data import class_split, image_ops, tfds_builders, tfds_source
from lamaml_jax.data.benchmark import Benchmark

NUM_CLASSES = 100
CLASSES_PER_TASK = 5
MAX_TASKS = NUM_CLASSES // CLASSES_PER_TASK
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)


def preprocess(x):
  """[..., 32, 32, 3] uint8 -> float32 normalised with the CIFAR-100 mean/std."""
  return image_ops.normalize(x, MEAN, STD)


# Official code: RandomCrop(32, padding=4), RandomHorizontalFlip(),
# ColorJitter(brightness=63 / 255).
augment = image_ops.make_augment(pad=4, flip=True, brightness=63 / 255)


def load_splits(data_dir: Optional[str] = None):
  """((x_train [50000, 32, 32, 3] uint8, y_train [50000]), (x_test, y_test))."""
  load = lambda split: tfds_source.load_split(
      tfds_builders.Cifar100, split, dataset="cifar100", data_dir=data_dir,
      urls=tfds_builders.Cifar100.urls())
  train, test = load("train"), load("test")
  return (train["image"], train["label"]), (test["image"], test["label"])


def make(*, seed: int, data_dir: Optional[str] = None,
         num_tasks: Optional[int] = None, samples_per_task: Optional[int] = None,
         val_fraction: float = 0.1, name: str = "cifar100",
         class_order: str = "numpy") -> Benchmark:
  """CIFAR-100 20x5: train [T, 2250, 32, 32, 3], val [T, 250, ...], test [T, 500, ...]."""
  if num_tasks is not None and not 1 <= num_tasks <= MAX_TASKS:
    raise ValueError(f"{name}: num_tasks={num_tasks}, but the dataset allows "
                     f"at most {MAX_TASKS} tasks of {CLASSES_PER_TASK} classes.")
  train, test = load_splits(data_dir)
  return class_split.make_benchmark(
      name=name, train=train, test=test, num_classes=NUM_CLASSES,
      classes_per_task=CLASSES_PER_TASK, seed=seed, num_tasks=num_tasks,
      samples_per_task=samples_per_task, val_fraction=val_fraction,
      class_order=class_order,
      preprocess=preprocess, augment=augment, info={"source": "tfds:cifar100"})
