"""Continual-learning metrics on an accuracy matrix.

Notation: `R` is a T x T matrix with `R[i, j]` the test
accuracy on task j after training on task i, and `b[j]` the accuracy of the
untrained model on task j. The functions are scale-agnostic: pass fractions or
percentages, the metrics come out in the same unit.

  RA  = 1/T       sum_j         R[T-1, j]
  BTI = 1/(T-1)   sum_{j<T-1}   R[T-1, j] - R[j, j]     (GEM's BWT)
  BTI_official = the same sum / T                        (official La-MAML code)
  LA  = 1/T       sum_j         R[j, j]
  FWT = 1/(T-1)   sum_{j>0}     R[j-1, j] - b[j]
  forgetting = 1/(T-1) sum_{j<T-1} max_{l<T-1} R[l, j] - R[T-1, j]
                                                          (Chaudhry et al., 2018)

All functions are pure NumPy and return Python floats.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np


def _check_matrix(R) -> np.ndarray:
  R = np.asarray(R, dtype=np.float64)
  if R.ndim != 2 or R.shape[0] != R.shape[1]:
    raise ValueError(f"Accuracy matrix must be square (T x T), got shape {R.shape}.")
  if R.shape[0] == 0:
    raise ValueError("Accuracy matrix must have at least one task (T >= 1).")
  return R


def _check_baseline(b, num_tasks: int) -> np.ndarray:
  b = np.asarray(b, dtype=np.float64)
  if b.ndim != 1 or b.shape[0] != num_tasks:
    raise ValueError(f"Untrained accuracies b must have shape ({num_tasks},) to match "
                     f"the {num_tasks} x {num_tasks} accuracy matrix, got shape {b.shape}.")
  return b


def retained_accuracy(R) -> float:
  """RA: mean accuracy over all tasks after training on the last task."""
  R = _check_matrix(R)
  return float(R[-1].mean())


def backward_transfer(R) -> float:
  """BTI (GEM's BWT): mean over j < T-1 of R[T-1, j] - R[j, j]; 0.0 when T == 1."""
  R = _check_matrix(R)
  t = R.shape[0]
  if t == 1:
    return 0.0
  return float((R[-1, :-1] - np.diag(R)[:-1]).mean())


def backward_transfer_official(R) -> float:
  """BTI as computed by the official La-MAML code (the paper's figures use it).

  The official `confusion_matrix` takes `(R[T-1] - diag(R)).mean()` over all T
  tasks, so the last task's zero term is included: the sum of `backward_transfer`
  is divided by T instead of T - 1, i.e. it equals `backward_transfer(R) * (T-1)/T`.
  """
  R = _check_matrix(R)
  return float((R[-1] - np.diag(R)).sum() / R.shape[0])


def learning_accuracy(R) -> float:
  """LA: mean over j of R[j, j], the accuracy on each task right after learning it."""
  R = _check_matrix(R)
  return float(np.diag(R).mean())


def forward_transfer(R, b) -> float:
  """FWT (GEM): mean over j > 0 of R[j-1, j] - b[j]; 0.0 when T == 1."""
  R = _check_matrix(R)
  b = _check_baseline(b, R.shape[0])
  t = R.shape[0]
  if t == 1:
    return 0.0
  return float((np.diag(R, k=1) - b[1:]).mean())


def average_forgetting(R) -> float:
  """Average forgetting (Chaudhry et al., 2018, Riemannian Walk): over the tasks
  before the last, the best accuracy any earlier row reached minus the final
  one; 0.0 when T == 1. Unlike BTI it measures each drop from the task's best
  accuracy, not from the one right after learning it (the max runs over every
  row before the last, as in the paper's definition)."""
  R = _check_matrix(R)
  t = R.shape[0]
  if t == 1:
    return 0.0
  return float((R[:-1, :-1].max(axis=0) - R[-1, :-1]).mean())


def summarize(R, b, num_rows: Optional[int] = None) -> dict[str, float]:
  """All metrics of a run.

  Args:
    R: [T, T] accuracy matrix.
    b: [T] accuracies of the untrained model.
    num_rows: for an incomplete run that has finished only the first k tasks (rows
      k.. of `R` unfilled, e.g. NaN), pass k: the metrics are computed as if the run
      had k tasks, from the top-left k x k block of `R` and `b[:k]`. None means T.

  Returns:
    {'ra', 'bti', 'bti_official', 'la', 'fwt', 'forgetting'} as Python floats.

  Raises:
    ValueError: on bad shapes, `num_rows` outside [1, T], or a non-finite value in
      the block used.
  """
  R = _check_matrix(R)
  t = R.shape[0]
  b = _check_baseline(b, t)
  k = t if num_rows is None else int(num_rows)
  if not 1 <= k <= t:
    raise ValueError(f"num_rows must be in [1, {t}], got {num_rows}.")
  R, b = R[:k, :k], b[:k]
  if not (np.isfinite(R).all() and np.isfinite(b).all()):
    raise ValueError(f"Accuracy matrix block [:{k}, :{k}] or b[:{k}] has non-finite "
                     "values; pass num_rows=<number of completed tasks>.")
  return {
      "ra": retained_accuracy(R),
      "bti": backward_transfer(R),
      "bti_official": backward_transfer_official(R),
      "la": learning_accuracy(R),
      "fwt": forward_transfer(R, b),
      "forgetting": average_forgetting(R),
  }


def mean_std(results: Sequence[Mapping[str, float]],
             ddof: int = 1) -> dict[str, tuple[float, float]]:
  """Aggregates per-seed metric dicts into {key: (mean, std)}.

  The default std is the sample standard deviation (ddof=1), the usual "± std over
  seeds"; pass ddof=0 for the population std. With fewer than ddof + 1 results the
  std is undefined and returned as NaN (ddof=1 and a single seed gives NaN).

  Args:
    results: non-empty sequence of dicts with identical keys (e.g. `summarize`
      outputs, one per seed).
    ddof: delta degrees of freedom of the std.

  Raises:
    ValueError: on an empty sequence or dicts with different keys.
  """
  if not results:
    raise ValueError("mean_std needs at least one result.")
  keys = list(results[0])
  for i, r in enumerate(results):
    if set(r) != set(keys):
      raise ValueError(f"Result {i} has keys {sorted(r)}, result 0 has {sorted(keys)}.")
  out = {}
  for key in keys:
    values = np.asarray([r[key] for r in results], dtype=np.float64)
    std = float(values.std(ddof=ddof)) if len(values) > ddof else float("nan")
    out[key] = (float(values.mean()), std)
  return out
