"""MNIST Rotations / Permutations / Many Permutations task streams (single head).

Follows the GEM generators (`data/mnist_rotations.py`, `mnist_permutations.py`)
that MER and La-MAML use, and the La-MAML loader's per-task sampling:
- Rotations: task t of T rotates every image, train and test, by one angle drawn
  uniformly from [180 t / T, 180 (t + 1) / T) degrees, counter-clockwise, with
  PIL's `Image.rotate(angle)` defaults (nearest neighbour, same size, fill 0) on
  the uint8 28x28 image, as GEM's `rotate_dataset`. The rotation is computed once
  per task by rotating an image of pixel indices (mode 'I') with the same call,
  then gathered for all images: this equals rotating each image (tested).
- Permutations: task t permutes the 784 pixels with its own random permutation;
  as in GEM, task 0 is a random permutation too (not the identity).
- Each task trains on `samples_per_task` images drawn without replacement from
  the whole train split, independently per task (the loader's `randperm(N)[:n]`);
  it is tested on the whole test split (or a fixed subset of it, the same for
  every task, when `test_samples_per_task` is set) under its transform.
GEM seeds only torch, not the `random` module its angles come from, so its
angles were not reproducible; here everything comes from one
`np.random.default_rng(seed)`, drawn in this order: the T angles (or T
permutations), then each task's sample indices, then the test subset.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from lamaml_jax.data.benchmark import Benchmark

SIZE = 28
NUM_PIXELS = SIZE * SIZE


def preprocess(x: jax.Array) -> jax.Array:
  """[..., 784] uint8 -> float32 in [0, 1]."""
  return jnp.asarray(x, jnp.float32) / 255.0


def rotation_index_map(angle: float) -> np.ndarray:
  """[784] int: flat source pixel of each output pixel of PIL's rotate(angle), -1 = fill."""
  idx = np.arange(1, NUM_PIXELS + 1, dtype=np.int32).reshape(SIZE, SIZE)
  rotated = np.asarray(Image.fromarray(idx).rotate(float(angle)), np.int64)
  return rotated.reshape(-1) - 1


def apply_index_map(x: np.ndarray, index_map: np.ndarray) -> np.ndarray:
  """x [N, 784] -> [N, 784]: out[:, j] = x[:, index_map[j]], or 0 where it is -1."""
  out = x[:, np.maximum(index_map, 0)]
  out[:, index_map < 0] = 0
  return out


def rotate(x: np.ndarray, angle: float) -> np.ndarray:
  """Rotates flat images x [N, 784] uint8 counter-clockwise by `angle` degrees."""
  return apply_index_map(x, rotation_index_map(angle))


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a seed determines: per-task transforms and sample indices.

  Attributes:
    angles: [T] degrees (rotations) or None.
    permutations: [T, 784] pixel permutations (permutations) or None.
    train_indices: [T, samples_per_task] rows of the train split.
    test_indices: [M] rows of the test split used by every task.
  """
  angles: Optional[np.ndarray]
  permutations: Optional[np.ndarray]
  train_indices: np.ndarray
  test_indices: np.ndarray

  def index_map(self, t: int) -> np.ndarray:
    if self.angles is not None:
      return rotation_index_map(self.angles[t])
    return self.permutations[t]


def make_plan(kind: str, *, seed: int, num_tasks: int, num_train: int,
              samples_per_task: int, num_test: int,
              test_samples_per_task: Optional[int] = None) -> Plan:
  """Draws the plan of a stream; kind is 'rotations' or 'permutations'."""
  if kind not in ("rotations", "permutations"):
    raise ValueError(f"Unknown MNIST stream kind {kind!r}.")
  if num_tasks < 1:
    raise ValueError(f"num_tasks must be >= 1, got {num_tasks}.")
  if not 1 <= samples_per_task <= num_train:
    raise ValueError(f"samples_per_task={samples_per_task}, but the train split "
                     f"has at most {num_train} samples.")
  m = num_test if test_samples_per_task is None else test_samples_per_task
  if not 1 <= m <= num_test:
    raise ValueError(f"test_samples_per_task={m}, but the test split has at most "
                     f"{num_test} samples.")
  rng = np.random.default_rng(seed)
  angles = perms = None
  if kind == "rotations":
    t = np.arange(num_tasks)
    lo, hi = 180.0 * t / num_tasks, 180.0 * (t + 1) / num_tasks
    angles = lo + rng.random(num_tasks) * (hi - lo)
  else:
    perms = np.stack([rng.permutation(NUM_PIXELS) for _ in range(num_tasks)])
  train = np.stack([rng.permutation(num_train)[:samples_per_task]
                    for _ in range(num_tasks)])
  test = (np.arange(num_test) if test_samples_per_task is None
          else np.sort(rng.permutation(num_test)[:m]))
  return Plan(angles, perms, train, test)


def make_benchmark(name: str, kind: str, *, train: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], seed: int, num_tasks: int,
                   samples_per_task: int,
                   test_samples_per_task: Optional[int] = None,
                   source: str = "") -> Benchmark:
  """Single-head stream from flat splits x [N, 784] uint8, y [N] in 0..9.

  Returns train [T, samples_per_task, 784], test [T, M, 784] (uint8), labels int32.
  """
  (x_tr, y_tr), (x_te, y_te) = train, test
  plan = make_plan(kind, seed=seed, num_tasks=num_tasks, num_train=len(x_tr),
                   samples_per_task=samples_per_task, num_test=len(x_te),
                   test_samples_per_task=test_samples_per_task)
  x_te, y_te = x_te[plan.test_indices], y_te[plan.test_indices]
  train_x = np.empty((num_tasks, samples_per_task, NUM_PIXELS), np.uint8)
  test_x = np.empty((num_tasks, len(x_te), NUM_PIXELS), np.uint8)
  for t in range(num_tasks):
    index_map = plan.index_map(t)
    train_x[t] = apply_index_map(x_tr[plan.train_indices[t]], index_map)
    test_x[t] = apply_index_map(x_te, index_map)
  info = {"seed": seed, "source": source, "transform": kind,
          "samples_per_task": samples_per_task, "test_per_task": len(x_te)}
  if plan.angles is not None:
    info["angles"] = [float(a) for a in plan.angles]
  return Benchmark(
      name=name, train_x=train_x, train_y=y_tr[plan.train_indices].astype(np.int32),
      test_x=test_x, test_y=np.tile(y_te.astype(np.int32), (num_tasks, 1)),
      num_outputs=10, classes_per_task=None, preprocess=preprocess, info=info)
