"""Shared by the tests of the SGD learners (online, ER, EWC): a tiny build context,
batches, and a cross-entropy that slices each row's own logits, apart from `heads`.
With classes_per_task=2 the 4 outputs hold the heads of tasks 0 and 1 only."""
import functools

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from lamaml_jax import networks
from lamaml_jax.learners import base
from lamaml_jax.types import Batch

NET = networks.MLP(hidden=(8,), num_outputs=4)


def context(classes_per_task=None) -> base.BuildContext:
  return base.BuildContext(
      network=NET, num_outputs=4, classes_per_task=classes_per_task, num_tasks=3,
      samples_per_task=20, batch_size=4, epochs=1, steps_per_task=5,
      input_shape=(5,))


def make_batch(seed, n=4, task=0, classes_per_task=None) -> Batch:
  """n samples of `task`, labels inside its head when heads are per task (numpy
  draws: no small programs to compile)."""
  rng = np.random.default_rng(seed)
  width = classes_per_task or 4
  y = rng.integers(0, width, n) + task * (classes_per_task or 0)
  return Batch(x=jnp.asarray(rng.normal(size=(n, 5)), jnp.float32),
               y=jnp.asarray(y, jnp.int32), task=jnp.full((n,), task, jnp.int32),
               weight=jnp.ones(n))


@functools.partial(jax.jit, static_argnums=2)
def hand_ce(params, batch: Batch, classes_per_task=None):
  """Σ_i w_i CE_i / Σ_i w_i, CE_i = logsumexp(own) − own[y_i − lo_i], where own
  [B, C] gathers each row's own logits lo_i..lo_i + C − 1 (the official slicing
  `take_multitask_loss`, not the masking of `heads`)."""
  logits = NET.apply({"params": params}, batch.x)
  width = classes_per_task or logits.shape[1]
  lo = batch.task * classes_per_task if classes_per_task else jnp.zeros_like(batch.y)
  own = jnp.take_along_axis(logits, lo[:, None] + jnp.arange(width)[None, :], axis=1)
  ce = jax.nn.logsumexp(own, axis=1) - own[jnp.arange(own.shape[0]), batch.y - lo]
  return jnp.sum(batch.weight * ce) / jnp.sum(batch.weight)


hand_grad = jax.jit(jax.grad(hand_ce), static_argnums=2)


def sgd(params, grads, lr):
  return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)


def jit_once(fn, **jit_kwargs):
  """`fn` compiled, failing if it is traced a second time. Clears chex's trace
  counters first: they are keyed by the call site, which parametrized tests share."""
  chex.clear_trace_counter()
  return jax.jit(chex.assert_max_traces(fn, n=1), **jit_kwargs)


def flat(tree) -> np.ndarray:
  return np.asarray(jax.flatten_util.ravel_pytree(tree)[0], np.float64)


def init_swept(learner, example: Batch, **sweep: float):
  """learner.init with `sweep` given as traced [] arrays, as a grid passes them."""
  return jax.jit(lambda values: learner.init(jax.random.PRNGKey(1), example, **values))(
      {name: jnp.float32(value) for name, value in sweep.items()})


def finite_after_nan_input(learner, observe, batch: Batch) -> bool:
  """metrics['finite'] of one `observe` call (the learner's, maybe compiled) on
  `batch` with one NaN input."""
  state = learner.init(jax.random.PRNGKey(1), batch)
  bad = batch._replace(x=batch.x.at[0, 0].set(jnp.nan))
  return bool(observe(state, bad, jnp.int32(0))[1]["finite"])
