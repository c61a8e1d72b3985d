"""benchmarks/official_mnist_data.py: our MNIST tasks in the official loader's format."""
import sys
import types

import numpy as np
import pytest



@pytest.fixture(scope="module")
def tool(load_benchmark):
  return load_benchmark("official_mnist_data")


@pytest.fixture(scope="module")
def exported(tool, tmp_path_factory):
  out = tmp_path_factory.mktemp("official")
  return tool.export("rotations", 0, str(out), num_tasks=2, samples_per_task=50)


def test_export_writes_every_task_as_flat_unit_pixels(exported):
  data = np.load(exported)
  assert sorted(data.files) == sorted(f"{s}_{a}{t}" for s in ("tr", "te")
                                      for a in ("x", "y") for t in range(2))
  for t in range(2):
    x, y = data[f"tr_x{t}"], data[f"tr_y{t}"]
    assert x.shape == (50, 784) and x.dtype == np.float32 and y.shape == (50,)
    assert y.dtype == np.int64 and set(np.unique(y)) <= set(range(10))
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5  # pixels, scaled once
    assert data[f"te_x{t}"].shape[1] == 784
  # Each task rotates the same test images by its own angle.
  assert not np.array_equal(data["te_x0"], data["te_x1"])
  np.testing.assert_array_equal(data["te_y0"], data["te_y1"])


def test_to_torch_builds_the_loaders_tuple(tool, exported, monkeypatch):
  saved = {}
  fake = types.SimpleNamespace(from_numpy=lambda a: ("tensor", a),
                               save=lambda obj, path: saved.update(obj=obj, path=path))
  monkeypatch.setitem(sys.modules, "torch", fake)
  path = tool.to_torch(exported)
  assert path == exported[:-len(".npz")] + ".pt" == saved["path"]
  train, test = saved["obj"]
  assert len(train) == len(test) == 2
  data = np.load(exported)
  for t, (tag, x, y) in enumerate(train):
    assert tag == "mnist_rotations"
    np.testing.assert_array_equal(x[1], data[f"tr_x{t}"])
    np.testing.assert_array_equal(y[1], data[f"tr_y{t}"])


def test_unknown_kind_is_refused(tool, tmp_path):
  with pytest.raises(ValueError, match="rotations"):
    tool.export("spirals", 0, str(tmp_path))
