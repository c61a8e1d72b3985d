"""Tests for lamaml_jax.metrics against hand-computed values."""
import math

import numpy as np
import pytest

from lamaml_jax import metrics

# R[i, j]: accuracy on task j after training task i.
R3 = np.array([[0.90, 0.10, 0.20],
               [0.70, 0.80, 0.30],
               [0.60, 0.50, 0.95]])
B3 = np.array([0.10, 0.12, 0.25])

# By hand:
#   RA  = (0.60 + 0.50 + 0.95) / 3                    = 2.05 / 3
#   BTI = ((0.60 - 0.90) + (0.50 - 0.80)) / 2         = -0.3
#   BTI_official = -0.6 / 3                           = -0.2
#   LA  = (0.90 + 0.80 + 0.95) / 3                    = 2.65 / 3
#   FWT = ((0.10 - 0.12) + (0.30 - 0.25)) / 2         = 0.015
#   forgetting = ((max(0.90, 0.70) - 0.60) + (max(0.10, 0.80) - 0.50)) / 2 = 0.3
EXPECTED3 = {"ra": 0.6833333333333333, "bti": -0.3, "bti_official": -0.2,
             "la": 0.8833333333333333, "fwt": 0.015, "forgetting": 0.3}


def test_forgetting_measures_the_drop_from_the_best_earlier_row():
  # Task 0 improves after task 1 (0.5 -> 0.9), then ends at 0.6: BTI sees +0.1,
  # forgetting the 0.3 drop from its best; task 1 ends above its best: -0.1.
  R = np.array([[0.5, 0.1, 0.0],
                [0.9, 0.7, 0.2],
                [0.6, 0.8, 0.9]])
  assert metrics.average_forgetting(R) == pytest.approx(((0.9 - 0.6) + (0.7 - 0.8)) / 2)
  assert metrics.backward_transfer(R) == pytest.approx(((0.6 - 0.5) + (0.8 - 0.7)) / 2)
  assert metrics.average_forgetting(np.array([[0.4]])) == 0.0


def test_individual_metrics_on_3x3():
  assert metrics.retained_accuracy(R3) == pytest.approx(0.6833333333333333)
  assert metrics.backward_transfer(R3) == pytest.approx(-0.3)
  assert metrics.backward_transfer_official(R3) == pytest.approx(-0.2)
  assert metrics.learning_accuracy(R3) == pytest.approx(0.8833333333333333)
  assert metrics.forward_transfer(R3, B3) == pytest.approx(0.015)


def test_summarize_on_3x3():
  out = metrics.summarize(R3, B3)
  assert set(out) == set(EXPECTED3)
  for key, value in EXPECTED3.items():
    assert out[key] == pytest.approx(value), key
    assert type(out[key]) is float, key


def test_metrics_accept_lists_and_percentages():
  out = metrics.summarize((R3 * 100).tolist(), list(B3 * 100))
  assert out["ra"] == pytest.approx(68.33333333333333)
  assert out["bti"] == pytest.approx(-30.0)
  assert out["fwt"] == pytest.approx(1.5)


def test_single_task():
  out = metrics.summarize([[0.7]], [0.1])
  assert out == {"ra": pytest.approx(0.7), "bti": 0.0, "bti_official": 0.0,
                 "la": pytest.approx(0.7), "fwt": 0.0, "forgetting": 0.0}
  assert metrics.backward_transfer([[0.7]]) == 0.0
  assert metrics.forward_transfer([[0.7]], [0.1]) == 0.0


def test_partial_rows_use_top_left_block():
  partial = R3.copy()
  partial[2] = np.nan  # Task 2 not trained yet.
  # By hand on [[0.9, 0.1], [0.7, 0.8]], b = [0.1, 0.12]:
  expected = {"ra": 0.75, "bti": -0.2, "bti_official": -0.1, "la": 0.85,
              "fwt": -0.02}
  out = metrics.summarize(partial, B3, num_rows=2)
  for key, value in expected.items():
    assert out[key] == pytest.approx(value), key
  one = metrics.summarize(partial, B3, num_rows=1)
  assert one == {"ra": pytest.approx(0.9), "bti": 0.0, "bti_official": 0.0,
                 "la": pytest.approx(0.9), "fwt": 0.0, "forgetting": 0.0}
  full = metrics.summarize(R3, B3, num_rows=3)
  assert full == pytest.approx(EXPECTED3)


def test_unfilled_rows_without_num_rows_raise():
  partial = R3.copy()
  partial[2] = np.nan
  with pytest.raises(ValueError, match="num_rows"):
    metrics.summarize(partial, B3)


@pytest.mark.parametrize("num_rows", [0, 4, -1])
def test_bad_num_rows_raise(num_rows):
  with pytest.raises(ValueError, match="num_rows"):
    metrics.summarize(R3, B3, num_rows=num_rows)


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros(3), np.zeros((3, 3, 1)),
                                 np.zeros((0, 0))])
def test_bad_matrix_shapes_raise(bad):
  for fn in (metrics.retained_accuracy, metrics.backward_transfer,
             metrics.backward_transfer_official, metrics.learning_accuracy):
    with pytest.raises(ValueError):
      fn(bad)
  with pytest.raises(ValueError):
    metrics.forward_transfer(bad, np.zeros(3))
  with pytest.raises(ValueError):
    metrics.summarize(bad, np.zeros(3))


@pytest.mark.parametrize("bad_b", [np.zeros(2), np.zeros(4), np.zeros((3, 1))])
def test_bad_baseline_shapes_raise(bad_b):
  with pytest.raises(ValueError, match="b must have shape"):
    metrics.forward_transfer(R3, bad_b)
  with pytest.raises(ValueError, match="b must have shape"):
    metrics.summarize(R3, bad_b)


def test_mean_std():
  runs = [{"ra": 1.0, "bti": 2.0}, {"ra": 3.0, "bti": 2.0}]
  out = metrics.mean_std(runs)
  assert set(out) == {"ra", "bti"}
  # Sample std of {1, 3}: sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2).
  assert out["ra"] == (pytest.approx(2.0), pytest.approx(math.sqrt(2.0)))
  assert out["bti"] == (pytest.approx(2.0), 0.0)
  pop = metrics.mean_std(runs, ddof=0)
  assert pop["ra"] == (pytest.approx(2.0), pytest.approx(1.0))
  assert all(type(x) is float for pair in out.values() for x in pair)


def test_mean_std_single_seed_and_errors():
  mean, std = metrics.mean_std([{"ra": 0.5}])["ra"]
  assert mean == 0.5 and math.isnan(std)
  assert metrics.mean_std([{"ra": 0.5}], ddof=0)["ra"] == (0.5, 0.0)
  with pytest.raises(ValueError):
    metrics.mean_std([])
  with pytest.raises(ValueError, match="keys"):
    metrics.mean_std([{"ra": 1.0}, {"la": 1.0}])
