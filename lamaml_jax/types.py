"""Types shared across the package."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax

PRNGKey = jax.Array
Params = Any  # a pytree of arrays
Metrics = dict[str, jax.Array]


class Batch(NamedTuple):
  """A batch of labelled samples, each from its own task.

  Attributes:
    x: [B, *input_shape] float32 model inputs (preprocessed).
    y: [B] int32 output index in [0, num_outputs).
    task: [B] int32 task id of each sample (selects its head).
    weight: [B] float32 sample weight; 0 marks padding (e.g. an unfilled replay slot).
  """
  x: jax.Array
  y: jax.Array
  task: jax.Array
  weight: jax.Array
