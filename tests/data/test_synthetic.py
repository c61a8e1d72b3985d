"""Synthetic benchmarks of the real shapes."""
import numpy as np
import pytest

import configs
from lamaml_jax.data import make_benchmark


def test_synthetic_cifar100_has_the_real_shapes_and_split():
  b = make_benchmark("synthetic_cifar100", seed=0, num_tasks=3)
  assert b.train_x.shape == (3, 2250, 32, 32, 3) and b.test_x.shape == (3, 500, 32, 32, 3)
  assert b.classes_per_task == 5 and b.num_outputs == 100
  for t in range(3):
    assert set(np.unique(b.train_y[t])) == set(range(5 * t, 5 * t + 5))
  assert b.augment is not None
  other = make_benchmark("synthetic_cifar100", seed=1, num_tasks=3)
  assert not np.array_equal(b.train_x, other.train_x)  # class order follows the seed
  with pytest.raises(ValueError, match="at most 20"):
    make_benchmark("synthetic_cifar100", seed=0, num_tasks=21)


def test_synthetic_configs_mirror_the_real_cells():
  real = configs.get_config("lamaml", "cifar100,single_pass")
  fake = configs.get_config("lamaml", "synthetic_cifar100,single_pass")
  assert fake.dataset == "synthetic_cifar100"
  assert fake.paper_ra is None and real.paper_ra == 61.18  # random pixels: no figure
  fake.dataset, fake.paper_ra = real.dataset, real.paper_ra
  assert fake.to_dict() == real.to_dict()
