"""MNIST Rotations / Permutations streams on the bundled 5k digits."""
import hashlib
import os
import pathlib
import subprocess
import sys

import chex
import jax
import numpy as np
from PIL import Image
import pytest

from lamaml_jax.data import make_benchmark, mnist5k, mnist_streams


@pytest.fixture(scope="module")
def splits():
  return mnist5k.load()


def test_mnist5k_split_is_stratified_and_fixed(splits):
  (x_tr, y_tr), (x_te, y_te) = splits
  chex.assert_shape(x_tr, (4000, 784))
  chex.assert_shape(x_te, (1000, 784))
  assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(y_tr), [400] * 10)
  np.testing.assert_array_equal(np.bincount(y_te), [100] * 10)
  assert x_tr.max() == 255 and x_tr.min() == 0
  # Train and test are disjoint rows of the CSV.
  rows = lambda x: {hashlib.md5(r.tobytes()).hexdigest() for r in x}
  assert not rows(x_tr) & rows(x_te)
  assert len(set(y_tr[:20].tolist())) > 3  # shuffled, not sorted by class


def test_rotation_by_zero_is_identity(splits):
  x = splits[0][0][:50]
  np.testing.assert_array_equal(mnist_streams.rotate(x, 0.0), x)


def test_rotation_by_90_is_counter_clockwise_rot90(splits):
  x = splits[0][0][:50]
  expected = np.rot90(x.reshape(-1, 28, 28), k=1, axes=(1, 2)).reshape(-1, 784)
  np.testing.assert_array_equal(mnist_streams.rotate(x, 90.0), expected)


def test_rotation_equals_pil_rotate_per_image(splits):
  x = splits[0][0][:8]
  rng = np.random.default_rng(0)
  for angle in rng.uniform(0, 180, 25):
    ref = np.stack([np.asarray(Image.fromarray(im.reshape(28, 28)).rotate(angle))
                    for im in x]).reshape(-1, 784)
    np.testing.assert_array_equal(mnist_streams.rotate(x, angle), ref)


def test_rotations_benchmark(splits):
  bench = make_benchmark("mnist5k_rotations", seed=3)
  assert bench.name == "mnist5k_rotations"
  chex.assert_shape(bench.train_x, (20, 1000, 784))
  chex.assert_shape(bench.test_x, (20, 1000, 784))
  chex.assert_shape(bench.train_y, (20, 1000))
  assert bench.train_x.dtype == np.uint8 and bench.train_y.dtype == np.int32
  assert bench.num_outputs == 10 and bench.classes_per_task is None
  angles = np.asarray(bench.info["angles"])
  t = np.arange(20)
  assert np.all(angles >= 9.0 * t) and np.all(angles < 9.0 * (t + 1))
  plan = mnist_streams.make_plan("rotations", seed=3, num_tasks=20, num_train=4000,
                                 samples_per_task=1000, num_test=1000)
  np.testing.assert_allclose(plan.angles, angles)
  (x_tr, y_tr), (x_te, y_te) = splits
  for task in (0, 7, 19):
    np.testing.assert_array_equal(bench.test_x[task], mnist_streams.rotate(x_te, angles[task]))
    np.testing.assert_array_equal(bench.test_y[task], y_te)
    idx = plan.train_indices[task]
    np.testing.assert_array_equal(bench.train_x[task],
                                  mnist_streams.rotate(x_tr[idx], angles[task]))
    np.testing.assert_array_equal(bench.train_y[task], y_tr[idx])
  # Each task samples its own 1000 distinct training images.
  assert len(set(plan.train_indices[0].tolist())) == 1000
  assert not np.array_equal(plan.train_indices[0], plan.train_indices[1])


def test_inverse_permutation_recovers_digits(splits):
  bench = make_benchmark("mnist5k_permutations", seed=5, num_tasks=4)
  plan = mnist_streams.make_plan("permutations", seed=5, num_tasks=4, num_train=4000,
                                 samples_per_task=1000, num_test=1000)
  (x_tr, _), (x_te, _) = splits
  for task in range(4):
    inverse = np.argsort(plan.permutations[task])
    np.testing.assert_array_equal(bench.train_x[task][:, inverse],
                                  x_tr[plan.train_indices[task]])
    np.testing.assert_array_equal(bench.test_x[task][:, inverse], x_te)
  # GEM: every task, task 0 included, is a real permutation.
  assert not np.array_equal(plan.permutations[0], np.arange(784))
  assert not np.array_equal(bench.test_x[0], x_te)


def test_many_permutations_shapes_and_test_cap():
  bench = make_benchmark("mnist5k_many_permutations", seed=0)
  chex.assert_shape(bench.train_x, (100, 200, 784))
  chex.assert_shape(bench.test_x, (100, 1000, 784))
  capped = make_benchmark("mnist5k_many_permutations", seed=0, num_tasks=3,
                          test_samples_per_task=100)
  chex.assert_shape(capped.test_x, (3, 100, 784))
  chex.assert_shape(capped.test_y, (3, 100))


@pytest.mark.parametrize("name", ["mnist5k_rotations", "mnist5k_permutations"])
def test_same_seed_same_arrays_other_seed_differs(name):
  a = make_benchmark(name, seed=1, num_tasks=5, samples_per_task=100)
  b = make_benchmark(name, seed=1, num_tasks=5, samples_per_task=100)
  c = make_benchmark(name, seed=2, num_tasks=5, samples_per_task=100)
  for field in ("train_x", "train_y", "test_x", "test_y"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  assert not np.array_equal(a.test_x, c.test_x)  # other angles / permutations
  assert not np.array_equal(a.train_y, c.train_y)  # other samples


_DIGEST = """
import hashlib, numpy as np
from lamaml_jax.data import make_benchmark
def digest(name, seed):
  b = make_benchmark(name, seed=seed, num_tasks=3, samples_per_task=50)
  h = hashlib.sha256()
  for arr in (b.train_x, b.train_y, b.test_x, b.test_y):
    h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()
"""


def test_same_seed_same_arrays_in_another_process():
  names = ("mnist5k_rotations", "mnist5k_permutations")
  code = _DIGEST + f"print(*[digest(n, 11) for n in {names!r}])"
  env = {**os.environ, "PYTHONHASHSEED": "123", "JAX_PLATFORMS": "cpu"}
  root = pathlib.Path(__file__).resolve().parents[2]
  out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                       text=True, env=env, cwd=root).stdout.split()
  scope = {}
  exec(_DIGEST, scope)  # pylint: disable=exec-used
  assert out == [scope["digest"](n, 11) for n in names]


def test_preprocess_is_jittable_and_scales():
  bench = make_benchmark("mnist5k_permutations", seed=0, num_tasks=1, samples_per_task=10)
  x = jax.jit(bench.preprocess)(bench.train_x[0])
  chex.assert_type(x, np.float32)
  np.testing.assert_allclose(np.asarray(x), bench.train_x[0] / 255.0, rtol=1e-6)


def test_invalid_sizes_name_the_maximum():
  with pytest.raises(ValueError, match="at most 4000"):
    make_benchmark("mnist5k_rotations", seed=0, samples_per_task=4001)
  with pytest.raises(ValueError, match="at most 1000"):
    make_benchmark("mnist5k_rotations", seed=0, test_samples_per_task=1001)


def test_full_mnist_is_downloaded_prepared_and_streamed(tmp_path, monkeypatch, online,
                                                        fakes):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  files = fakes.mnist_gz(tmp_path, n_train=60, n_test=20)

  def fake_download(self, urls):
    return {k: [str(files[u.rsplit("/", 1)[-1]]) for u in v] for k, v in urls.items()}

  monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
  data_dir = str(tmp_path / "data")
  bench = make_benchmark("mnist_rotations", seed=0, data_dir=data_dir, num_tasks=3,
                         samples_per_task=10)
  chex.assert_shape(bench.train_x, (3, 10, 784))
  chex.assert_shape(bench.test_x, (3, 20, 784))
  np.testing.assert_array_equal(np.sort(bench.test_y[0]), np.sort(np.arange(20) % 10))
  # Images and labels stay paired (pixel (0, 0) of a fake digit is its label).
  perm = make_benchmark("mnist_permutations", seed=4, data_dir=data_dir, num_tasks=2,
                        samples_per_task=60)
  plan = mnist_streams.make_plan("permutations", seed=4, num_tasks=2, num_train=60,
                                 samples_per_task=60, num_test=20)
  restored = perm.train_x[1][:, np.argsort(plan.permutations[1])]
  np.testing.assert_array_equal(restored[:, 0], perm.train_y[1])
