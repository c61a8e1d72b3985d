"""CIFAR-100 20x5: class split, TFDS loading (mock and real files), offline failure."""
import time

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lamaml_jax.data import (BENCHMARKS, class_split, cifar100, make_benchmark,
                             tfds_builders, tfds_source)


def _synthetic(n_train=20, n_test=4, num_classes=100):
  """Balanced fake splits whose image value encodes the class."""
  y_tr = np.repeat(np.arange(num_classes), n_train)
  y_te = np.repeat(np.arange(num_classes), n_test)
  img = lambda y: np.broadcast_to(y[:, None, None, None], (len(y), 2, 2, 3)).astype(np.uint8)
  return (img(y_tr), y_tr), (img(y_te), y_te)


def _split(seed, **kw):
  train, test = _synthetic()
  return class_split.make_benchmark(
      name="cifar100", train=train, test=test, num_classes=100, classes_per_task=5,
      seed=seed, preprocess=cifar100.preprocess, **kw)


def test_tasks_have_5_disjoint_classes_covering_all_100():
  bench = _split(0)
  chex.assert_shape(bench.train_x, (20, 90, 2, 2, 3))  # 20 - int(20 * 0.1) per class
  chex.assert_shape(bench.val_x, (20, 10, 2, 2, 3))
  chex.assert_shape(bench.test_x, (20, 20, 2, 2, 3))
  assert bench.num_outputs == 100 and bench.classes_per_task == 5
  order = np.asarray(bench.info["class_order"])
  np.testing.assert_array_equal(order, np.random.default_rng(0).permutation(100))
  seen = []
  for t in range(20):
    # The image encodes the original class; labels are output indices 5t..5t+4.
    for x, y in ((bench.train_x, bench.train_y), (bench.val_x, bench.val_y),
                 (bench.test_x, bench.test_y)):
      classes = x[t, :, 0, 0, 0]
      np.testing.assert_array_equal(np.sort(np.unique(classes)), np.sort(order[5 * t:5 * t + 5]))
      np.testing.assert_array_equal(y[t], np.argsort(order)[classes])
      assert set(y[t].tolist()) == set(range(5 * t, 5 * t + 5))
    assert np.all(np.bincount(bench.train_y[t] - 5 * t) == 18)
    seen.extend(np.unique(bench.train_x[t, :, 0, 0, 0]).tolist())
  assert sorted(seen) == list(range(100))
  assert bench.train_y.dtype == np.int32 and bench.test_y.dtype == np.int32


def test_class_order_repeats_for_a_seed_and_differs_between_seeds():
  a, b, c = _split(1), _split(1), _split(2)
  assert a.info["class_order"] == b.info["class_order"]
  assert a.info["class_order"] != c.info["class_order"]
  np.testing.assert_array_equal(a.train_x, b.train_x)
  np.testing.assert_array_equal(a.val_x, b.val_x)
  assert not np.array_equal(a.train_y, c.train_y) or not np.array_equal(a.train_x, c.train_x)


def test_num_tasks_and_samples_per_task_limits():
  bench = _split(0, num_tasks=3, samples_per_task=7)
  chex.assert_shape(bench.train_x, (3, 7, 2, 2, 3))
  chex.assert_shape(bench.test_x, (3, 20, 2, 2, 3))
  with pytest.raises(ValueError, match="at most 20 tasks"):
    _split(0, num_tasks=21)
  with pytest.raises(ValueError, match="at most 90"):
    _split(0, samples_per_task=91)
  with pytest.raises(ValueError, match="at most 20 tasks"):
    make_benchmark("cifar100", seed=0, num_tasks=21)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match="mnist5k_rotations.*cifar100.*tinyimagenet"):
    make_benchmark("cifar10", seed=0)
  assert set(BENCHMARKS) == {
      "mnist5k_rotations", "mnist5k_permutations", "mnist5k_many_permutations",
      "mnist_rotations", "mnist_permutations", "mnist_many_permutations",
      "mnist5k_split", "cifar100", "tinyimagenet", "synthetic_cifar100",
      "synthetic_tinyimagenet"}


@pytest.mark.parametrize("policy", [tfds.testing.MockPolicy.AUTO,
                                    tfds.testing.MockPolicy.USE_CODE])
def test_loads_under_tfds_mock_data(policy, online):
  with tfds.testing.mock_data(num_examples=3000, policy=policy):
    bench = make_benchmark("cifar100", seed=0)
  n = bench.train_x.shape[1]
  assert n > 0 and n % 5 == 0
  chex.assert_shape(bench.train_x, (20, n, 32, 32, 3))
  chex.assert_shape(bench.test_x[:, :, 0, 0, 0], (20, bench.test_x.shape[1]))
  assert bench.train_x.dtype == np.uint8
  for t in range(20):
    assert set(bench.train_y[t].tolist()) == set(range(5 * t, 5 * t + 5))


@pytest.mark.parametrize("policy", [tfds.testing.MockPolicy.AUTO,
                                    tfds.testing.MockPolicy.USE_CODE])
def test_full_mnist_loads_under_tfds_mock_data(policy, online):
  with tfds.testing.mock_data(num_examples=300, policy=policy):
    bench = make_benchmark("mnist_permutations", seed=0, num_tasks=2, samples_per_task=50)
  chex.assert_shape(bench.train_x, (2, 50, 784))
  chex.assert_shape(bench.test_x, (2, 300, 784))
  assert bench.train_x.dtype == np.uint8 and bench.test_y.max() <= 9


def test_missing_data_is_downloaded_and_prepared_when_online(tmp_path, monkeypatch, online,
                                                             fakes):
  archive = tmp_path / "cifar-100-binary.tar.gz"
  fakes.cifar100_tar(archive, n_train=3, n_test=1)
  urls = []

  def fake_download(self, url):
    urls.append(url)
    return str(archive)

  monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
  data_dir = tmp_path / "data"
  bench = make_benchmark("cifar100", seed=0, data_dir=str(data_dir))
  assert urls == tfds_builders.Cifar100.urls()
  assert (data_dir / "cifar100" / "3.0.2" / "dataset_info.json").exists()
  assert list((data_dir / "cifar100" / "3.0.2").glob("*.array_record-*"))
  chex.assert_shape(bench.train_x, (20, 15, 32, 32, 3))  # 3 per class, none held out
  assert bench.val_x is None
  chex.assert_shape(bench.test_x, (20, 5, 32, 32, 3))
  order = np.asarray(bench.info["class_order"])
  # Pixel (0, 0, red) is the fine label: check images and labels travelled together.
  np.testing.assert_array_equal(np.argsort(order)[bench.train_x[:, :, 0, 0, 0]], bench.train_y)
  np.testing.assert_array_equal(np.argsort(order)[bench.test_x[:, :, 0, 0, 0]], bench.test_y)
  # Read back from data_dir through the public TFDS API as well (no download).
  source = tfds.data_source("cifar100", split="test", data_dir=str(data_dir),
                            download=False)
  assert len(source) == 100
  ex = source[0]
  assert ex["image"].shape == (32, 32, 3) and ex["image"][0, 0, 0] == ex["label"]
  assert ex["coarse_label"] == ex["label"] // 5


def test_offline_failure_is_fast_and_names_the_fix(tmp_path, offline):
  start = time.monotonic()
  with pytest.raises(tfds_source.DataNotFoundError) as err:
    make_benchmark("cifar100", seed=0, data_dir=str(tmp_path))
  assert time.monotonic() - start < 10
  msg = str(err.value)
  assert "python -m lamaml_jax.data.prepare --dataset=cifar100" in msg
  assert "--data_dir" in msg and str(tmp_path) in msg
  assert isinstance(err.value, ValueError)


def test_real_network_check_fails_fast_here(tmp_path):
  urls = tfds_builders.Cifar100.urls()
  if tfds_source.network_reachable(urls):
    pytest.skip("the CIFAR-100 host is reachable: this test is for offline machines")
  start = time.monotonic()
  with pytest.raises(tfds_source.DataNotFoundError, match="--data_dir"):
    make_benchmark("cifar100", seed=0, data_dir=str(tmp_path))
  assert time.monotonic() - start < 10
