"""Inter-task gradient alignment (appendix D, Figure 4).

As task t arrives (0-based t >= 2, so that the old tasks 0..t-1 form at least
one pair), the gradient g_k of each task k's loss on a fixed subset of its
training data is taken at the current weights θ (trained on tasks 0..t-1). The
statistics, each a mean over the pairs it names:

  old_cos  = mean_{i<j<t} cos(g_i, g_j)     old_dot  = mean_{i<j<t} <g_i, g_j>
  new_cos  = mean_{i<t}   cos(g_i, g_t)     new_dot  = mean_{i<t}   <g_i, g_t>

cos(a, b) = <a, b> / (|a| |b|) (0 when either is 0). The paper's Figure 4 plots
the first two for C-MAML and La-MAML on CIFAR-100 ("the alignment stays positive
and roughly constant even as more tasks are added").

  statistics(grads [K, P], num_old) -> {name: []}
  make_program(learner, preprocess, batching) -> compiled probe of a run's members
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from lamaml_jax import members, task_program
from lamaml_jax.data.benchmark import Preprocess
from lamaml_jax.learners.base import Learner, State
from lamaml_jax.types import Batch

NAMES = ("old_cos", "old_dot", "new_cos", "new_dot")


def statistics(grads: jax.Array, num_old: jax.Array) -> dict[str, jax.Array]:
  """The module docstring's four means.

  Args:
    grads: [K, P] one flattened gradient per task; row `num_old` is the arriving
      task's, rows past it are ignored.
    num_old: [] int, t >= 2 old tasks (rows 0..t-1).
  Returns:
    {name: [] float32} for `NAMES`.
  """
  dots = grads @ grads.T                                    # [K, K]
  norms = jnp.sqrt(jnp.clip(jnp.diagonal(dots), 0.0))
  denom = norms[:, None] * norms[None, :]
  cos = jnp.where(denom > 0, dots / jnp.where(denom > 0, denom, 1.0), 0.0)
  k = jnp.arange(grads.shape[0])
  old = k < num_old
  pairs = old[:, None] & old[None, :] & (k[:, None] < k[None, :])
  mean = lambda values, mask: jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(
      jnp.sum(mask), 1)
  new_row = lambda m: jnp.take(m, num_old, axis=1)
  return {"old_cos": mean(cos, pairs), "old_dot": mean(dots, pairs),
          "new_cos": mean(new_row(cos), old),
          "new_dot": mean(new_row(dots), old)}


def task_gradients(loss: Callable, params, x: jax.Array, y: jax.Array,
                   preprocess: Preprocess) -> jax.Array:
  """[K, P] flattened gradients of `loss` at `params`, task k on its own head
  over x[k] ([K, n, ...] raw inputs) and y[k] ([K, n])."""
  def one(args):
    xk, yk, k = args
    n = yk.shape[0]
    batch = Batch(x=preprocess(xk), y=yk.astype(jnp.int32),
                  task=jnp.full((n,), k, jnp.int32), weight=jnp.ones((n,), jnp.float32))
    grads = jax.grad(loss)(params, batch)
    return jnp.concatenate([jnp.ravel(g) for g in jax.tree_util.tree_leaves(grads)])
  return jax.lax.map(one, (x, y, jnp.arange(y.shape[0], dtype=jnp.int32)))


def make_program(learner: Learner, preprocess: Preprocess,
                 batching: "str | members.Placement" = "vmap") -> Callable:
  """Returns `probe(state [M], x [S, K, n, ...], y [S, K, n], member_data [M],
  num_old []) -> {name: [M]}`, compiled.

  Member m's gradients are taken on the probe subsets of its seed's benchmark,
  x[member_data[m]] (members of one seed share them). Gradients of all K tasks
  are computed and those past `num_old` ignored, so one executable serves every
  task of the run.

  Raises:
    ValueError: the learner exposes no `loss`.
  """
  if learner.loss is None:
    raise ValueError("This method's learner exposes no `loss` (learners.base."
                     "Learner.loss), which the alignment probe differentiates.")

  def probe(state: State, x, y, member_data, num_old):
    def one(state, index, x, y):
      grads = task_gradients(learner.loss, learner.params(state), x[index], y[index],
                             preprocess)
      return statistics(grads, num_old)
    return task_program.over_members(one, batching, per_device=2)(state, member_data,
                                                                   x, y)

  return jax.jit(probe)
