"""IID: the multi-task upper bound (the official code's `iid2.py`).

Plain SGD on the IID stream (`schedules.IIDSchedule`: every task's training data
shuffled together, batches of 32 by default, each sample scored on its own
task's head); no clip, no glances, no replay. The learner is `online`'s; what
makes it the upper bound is the stream it is registered for.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from lamaml_jax.learners import base
from lamaml_jax.learners import online


@dataclasses.dataclass(frozen=True)
class IIDHparams(online.OnlineHparams):
  """Hyperparameters (official CIFAR-100 flags: lr 0.03, no clip, one step a batch)."""
  lr: float = 0.03
  glances: int = 1
  grad_clip_norm: Optional[float] = None


METHODS = {"iid": base.Method(hparams=IIDHparams, make=online.make,
                              sweepable=online.SWEEPABLE, step_sizes=("lr",),
                              schedule="iid")}
