"""Tests for lamaml_jax.plots: valid, non-trivial PNGs written atomically."""
import os
import sys

from matplotlib import image as mpl_image
import numpy as np
import pytest

from lamaml_jax import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

R3 = np.array([[0.90, 0.10, 0.20],
               [0.70, 0.80, 0.30],
               [0.60, 0.50, 0.95]])
B3 = np.array([0.10, 0.12, 0.25])


def _check_png(path, min_side=200):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  img = mpl_image.imread(path)
  assert img.ndim == 3 and img.shape[2] in (3, 4)
  assert img.shape[0] >= min_side and img.shape[1] >= min_side
  assert img[..., :3].std() > 0.05  # Not a blank canvas.
  assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # No temp files.
  return img


def test_plot_accuracy_matrix(tmp_path):
  path = str(tmp_path / "out" / "matrix.png")
  plots.plot_accuracy_matrix(R3, path, title="ER on MNIST rotations")
  _check_png(path)


def test_plot_accuracy_matrix_overwrites(tmp_path):
  path = str(tmp_path / "matrix.png")
  plots.plot_accuracy_matrix(R3, path, title="first")
  first = open(path, "rb").read()
  plots.plot_accuracy_matrix(R3 * 0.5, path, title="second")
  assert open(path, "rb").read() != first
  _check_png(path)


def test_plot_accuracy_matrix_partial_percent_and_many_tasks(tmp_path):
  partial = R3 * 100
  partial[2] = np.nan
  path = str(tmp_path / "a" / "partial.png")
  plots.plot_accuracy_matrix(partial, path, title="partial")
  _check_png(path)
  rng = np.random.default_rng(0)
  path = str(tmp_path / "b" / "big.png")
  plots.plot_accuracy_matrix(rng.uniform(size=(25, 25)), path, title="many")
  _check_png(path)


@pytest.mark.parametrize("with_b", [False, True])
def test_plot_task_accuracies(tmp_path, with_b):
  path = str(tmp_path / "tasks.png")
  plots.plot_task_accuracies(R3, path, title="per task", b=B3 if with_b else None)
  _check_png(path)


def test_plot_task_accuracies_partial_and_many_tasks(tmp_path):
  partial = R3.copy()
  partial[1:] = np.nan
  path = str(tmp_path / "a" / "partial.png")
  plots.plot_task_accuracies(partial, path, title="partial", b=B3)
  _check_png(path)
  rng = np.random.default_rng(0)
  path = str(tmp_path / "b" / "many.png")
  plots.plot_task_accuracies(rng.uniform(0, 100, size=(23, 23)), path, title="many",
                             b=rng.uniform(0, 10, size=23))
  _check_png(path)


def test_bad_shapes_raise(tmp_path):
  with pytest.raises(ValueError):
    plots.plot_accuracy_matrix(np.zeros((2, 3)), str(tmp_path / "x.png"), title="x")
  with pytest.raises(ValueError):
    plots.plot_task_accuracies(np.zeros(3), str(tmp_path / "x.png"), title="x")
  with pytest.raises(ValueError):
    plots.plot_task_accuracies(R3, str(tmp_path / "x.png"), title="x", b=np.zeros(2))
  assert os.listdir(tmp_path) == []


def test_no_pyplot_state(tmp_path):
  had_pyplot = "matplotlib.pyplot" in sys.modules
  plots.plot_accuracy_matrix(R3, str(tmp_path / "m.png"), title="m")
  plots.plot_task_accuracies(R3, str(tmp_path / "t.png"), title="t")
  if had_pyplot:
    assert sys.modules["matplotlib.pyplot"].get_fignums() == []
  else:
    assert "matplotlib.pyplot" not in sys.modules
