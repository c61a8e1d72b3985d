"""mnist5k_split: 5 tasks of 2 real digit classes, and the official class order."""
import random

import numpy as np

from lamaml_jax.data import make_benchmark
from lamaml_jax.data import mnist5k


def test_five_tasks_of_two_classes_with_task_incremental_labels():
  b = make_benchmark("mnist5k_split", seed=3)
  assert (b.num_tasks, b.classes_per_task, b.num_outputs) == (5, 2, 10)
  assert b.train_x.shape == (5, 720, 784) and b.val_x.shape == (5, 80, 784)
  assert b.test_x.shape == (5, 200, 784)
  order = np.asarray(b.info["class_order"])
  _, test = mnist5k.load()
  for t in range(5):
    for split in (b.train_y, b.val_y, b.test_y):
      assert set(np.unique(split[t])) == {2 * t, 2 * t + 1}
    # Output index 2t + i is digit order[2t + i]: check on the test images.
    for i in range(2):
      rows = b.test_x[t][b.test_y[t] == 2 * t + i]
      digits = {int(test[1][np.flatnonzero((test[0] == r).all(axis=1))[0]]) for r in rows[:5]}
      assert digits == {int(order[2 * t + i])}
  # Train, validation and test digits of a task do not overlap.
  assert not (set(map(bytes, b.train_x[0])) & set(map(bytes, b.val_x[0])))


def test_official_class_order_is_pythons_shuffle_of_the_seed():
  for seed in (0, 1, 7):
    want = list(range(10))
    random.seed(seed)
    random.shuffle(want)
    b = make_benchmark("mnist5k_split", seed=seed, class_order="official")
    assert b.info["class_order"] == want
  default = make_benchmark("mnist5k_split", seed=0).info["class_order"]
  np.testing.assert_array_equal(default, np.random.default_rng(0).permutation(10))
