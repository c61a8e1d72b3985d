"""The `Benchmark` container shared by every data source and the runner.

A benchmark is a sequence of T tasks held on the host as NumPy arrays with static
shapes, so that a whole task can be moved to the device once and scanned over.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import numpy as np

# raw batch [B, *input_shape] (benchmark dtype) -> float32 model input [B, *input_shape].
Preprocess = Callable[[jax.Array], jax.Array]
# (key, raw batch) -> raw batch of the same shape and dtype, randomly augmented.
Augment = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """T tasks with static shapes.

  Attributes:
    name: registry name, e.g. 'mnist5k_rotations'.
    train_x: [T, N, *input_shape] raw inputs (uint8 images).
    train_y: [T, N] int32 output index in [0, num_outputs). For task-incremental
      benchmarks task t's labels lie in [t * classes_per_task, (t + 1) * classes_per_task).
    test_x: [T, M, *input_shape] raw inputs.
    test_y: [T, M] int32, as train_y.
    num_outputs: width of the network's output layer (10, 100, 200).
    classes_per_task: None for single-head benchmarks (MNIST), else the number of
      logits each task owns (5): logits outside the task's range are masked.
    preprocess: jittable raw -> float32 normalised model input.
    augment: optional jittable training augmentation on raw inputs (CIFAR crops...).
    val_x, val_y: optional held-out validation split, [T, V, ...] and [T, V].
    info: free-form provenance (seed, angles, class order, source) for results.json.
  """
  name: str
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_outputs: int
  classes_per_task: Optional[int]
  preprocess: Preprocess
  augment: Optional[Augment] = None
  val_x: Optional[np.ndarray] = None
  val_y: Optional[np.ndarray] = None
  info: dict = dataclasses.field(default_factory=dict)

  @property
  def num_tasks(self) -> int:
    return self.train_x.shape[0]

  @property
  def samples_per_task(self) -> int:
    return self.train_x.shape[1]

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.train_x.shape[2:])

  def __post_init__(self):
    t = self.train_x.shape[0]
    for name in ("train_y", "test_x", "test_y"):
      if getattr(self, name).shape[0] != t:
        raise ValueError(f"Benchmark {self.name!r}: {name} has "
                         f"{getattr(self, name).shape[0]} tasks, train_x has {t}.")
    if self.train_y.shape != self.train_x.shape[:2]:
      raise ValueError(f"Benchmark {self.name!r}: train_y shape {self.train_y.shape} "
                       f"does not match train_x {self.train_x.shape[:2]}.")
    if self.test_y.shape != self.test_x.shape[:2]:
      raise ValueError(f"Benchmark {self.name!r}: test_y shape {self.test_y.shape} "
                       f"does not match test_x {self.test_x.shape[:2]}.")
