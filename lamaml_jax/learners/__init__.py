"""Learners by method name."""
from lamaml_jax.learners.base import Learner
from lamaml_jax.learners import lamaml

# method name -> family module with `make(hparams, network, classes_per_task)`.
LEARNER_FAMILIES = {name: lamaml for name in lamaml.METHODS}
METHODS = tuple(LEARNER_FAMILIES)
