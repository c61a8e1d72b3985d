"""TinyImageNet: our TFDS builder on a fake zip with the real layout, and 40x5 tasks."""
import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lamaml_jax.data import make_benchmark, tfds_source, tinyimagenet

WNIDS = ("n03", "n01", "n02")  # wnids.txt is not sorted; labels follow sorted order


def test_builder_prepares_zip_and_reads_back_through_data_dir(tmp_path, fakes):
  manual = tmp_path / "manual"
  manual.mkdir()
  fakes.tiny_imagenet_zip(manual / tinyimagenet.ZIP_NAME, WNIDS, n_train=4, n_val=2,
                          gray={("n02", 1)})
  data_dir = tmp_path / "data"
  builder = tfds_source.make_builder(tinyimagenet.TinyImagenet, str(data_dir))
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  version_dir = data_dir / "tiny_imagenet" / "1.0.0"
  assert list(version_dir.glob("tiny_imagenet-train.array_record-*"))

  # Read back by name through the public TFDS API, from data_dir only.
  sources = tfds.data_source("tiny_imagenet", data_dir=str(data_dir), download=False)
  assert len(sources["train"]) == 12 and len(sources["validation"]) == 6
  train = tfds_source.read_arrays(sources["train"], ("image", "label", "id"))
  chex.assert_shape(train["image"], (12, 64, 64, 3))
  assert train["image"].dtype == np.uint8
  names = builder.info.features["label"].names
  assert names == sorted(WNIDS)
  for image, label, key in zip(train["image"], train["label"], train["id"]):
    key = key.decode() if isinstance(key, bytes) else key
    assert key.startswith(names[label] + "_")
    np.testing.assert_allclose(image, fakes.tin_value(label), atol=3)
  # The grayscale JPEG came back as RGB with equal channels.
  gray = train["image"][[k in (b"n02_1.JPEG", "n02_1.JPEG") for k in train["id"]]][0]
  np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  val = tfds_source.read_arrays(sources["validation"])
  np.testing.assert_array_equal(np.bincount(val["label"]), [2, 2, 2])
  for image, label in zip(val["image"], val["label"]):
    np.testing.assert_allclose(image, fakes.tin_value(label), atol=3)


@pytest.fixture(scope="module")
def full_data_dir(tmp_path_factory, fakes):
  """DATA_DIR with only the manual zip of 200 classes (10 train, 2 val each)."""
  data_dir = tmp_path_factory.mktemp("tin")
  manual = data_dir / "downloads" / "manual"
  manual.mkdir(parents=True)
  wnids = [f"n{i:08d}" for i in range(200)]
  fakes.tiny_imagenet_zip(manual / tinyimagenet.ZIP_NAME, wnids, 10, 2, gray={(wnids[0], 0)})
  return data_dir


def test_benchmark_prepares_from_manual_dir_and_splits_40x5(full_data_dir, offline, fakes):
  bench = make_benchmark("tinyimagenet", seed=0, data_dir=str(full_data_dir))
  chex.assert_shape(bench.train_x, (40, 45, 64, 64, 3))  # 5 x (10 - 1 held out)
  chex.assert_shape(bench.val_x, (40, 5, 64, 64, 3))
  chex.assert_shape(bench.test_x, (40, 10, 64, 64, 3))  # 5 x 2 validation images
  assert bench.num_outputs == 200 and bench.classes_per_task == 5
  assert bench.augment is not None
  order = np.asarray(bench.info["class_order"])
  np.testing.assert_array_equal(order, np.random.default_rng(0).permutation(200))
  for t in (0, 17, 39):
    assert set(bench.train_y[t].tolist()) == set(range(5 * t, 5 * t + 5))
    assert set(bench.test_y[t].tolist()) == set(range(5 * t, 5 * t + 5))
    # Pixel values encode the original class: images and labels stayed together.
    original = order[bench.test_y[t]]
    np.testing.assert_allclose(bench.test_x[t, :, 0, 0, 0],
                               [fakes.tin_value(c) for c in original], atol=3)
  other = make_benchmark("tinyimagenet", seed=1, data_dir=str(full_data_dir), num_tasks=2)
  chex.assert_shape(other.train_x, (2, 45, 64, 64, 3))
  assert other.info["class_order"] != bench.info["class_order"]
  with pytest.raises(ValueError, match="at most 40"):
    make_benchmark("tinyimagenet", seed=0, data_dir=str(full_data_dir), num_tasks=41)


def test_missing_zip_names_the_fix(tmp_path):
  with pytest.raises(tfds_source.DataNotFoundError) as err:
    make_benchmark("tinyimagenet", seed=0, data_dir=str(tmp_path))
  msg = str(err.value)
  assert "python -m lamaml_jax.data.prepare --dataset=tiny_imagenet" in msg
  assert "tiny-imagenet-200.zip" in msg and "--data_dir" in msg
