"""EWC: elastic weight consolidation with a diagonal Fisher per finished task (MER
repository's `ewc.py`, copied from GEM's).

Training loss on a batch of task t, per glance (then θ ← θ − lr · clip(∇θ)):
  L(θ) = CE(θ) + λ P(θ),  P(θ) = Σ_{k<t} Σ_i F_k,i (θ_i − θ*_k,i)²,
without the paper's ½ (as the MER repo: λ here is half the EWC paper's λ), so
∇θ (λP) = 2λ Σ_k F_k ⊙ (θ − θ*_k) = 2λ (Aθ − b). The state keeps the O(P) running
sums A = Σ_k F_k, b = Σ_k F_k θ*_k and the scalar c = Σ_k Σ_i F_k,i θ*_k,i², so
that P = Σ_i (A_i θ_i² − 2 b_i θ_i) + c does not grow with the tasks. It is
evaluated as Σ_i A_i (θ_i − m_i)² + (c − Σ_i b_i m_i) with m = b / A (0 where
A = 0): the same value, without the cancellation of Aθ² − 2bθ + c near θ*.

`end_task` adds task k's F_k and θ*_k = θ (the weights after its last step):
- fisher='mean_per_sample_square' (default, the usual empirical Fisher):
  F = (1/n) Σ_j (∇θ CE_j)², the per-sample gradients taken in chunks of
  `fisher_chunk_size` samples (vmap) inside a `lax.scan`, so memory stays bounded;
- fisher='squared_mean_grad' (MER/GEM repo): F = (∇θ (1/n) Σ_j CE_j)²;
over the first n = fisher_samples samples of the task's training data (None: all
N; the MER repo uses its n_memories = 10 with squared_mean_grad), each on the
task's head. The MER repo computes F_k at the first call of task k+1, with the
same weights, on the first n_memories samples the stream delivered; here it is
computed at `end_task`, on the first n of `task_x` in their stored order.
"""
from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp

from lamaml_jax.learners import base
from lamaml_jax.learners import online
from lamaml_jax.types import Batch, Metrics, Params, PRNGKey

FISHERS = ("mean_per_sample_square", "squared_mean_grad")
SWEEPABLE = ("lr", "ewc_lambda")


@dataclasses.dataclass(frozen=True)
class EWCHparams(online.OnlineHparams):
  """Hyperparameters (defaults: MER repo, Many Permutations: lr 3e-3, λ 1).

  Attributes:
    lr, glances, grad_clip_norm: as `OnlineHparams` (no clip by default).
    ewc_lambda: λ, weight of the penalty (no ½; module docstring).
    fisher: the estimator of the diagonal Fisher (`FISHERS`, module docstring).
    fisher_samples: samples of each task the Fisher is computed on: the first n
      (at most all N), or None for all N.
    fisher_chunk_size: samples per chunk of the Fisher computation (memory only;
      the result is the same up to float rounding).
  """
  ewc_lambda: float = 1.0
  fisher: Literal["mean_per_sample_square", "squared_mean_grad"] = (
      "mean_per_sample_square")
  fisher_samples: Optional[int] = None
  fisher_chunk_size: int = 32

  def __post_init__(self):
    super().__post_init__()
    base.check_positive("ewc_lambda", self.ewc_lambda)
    if self.fisher not in FISHERS:
      raise ValueError(f"fisher must be one of {FISHERS}, got {self.fisher!r}.")
    if self.fisher_samples is not None:
      base.check_at_least("fisher_samples", self.fisher_samples, 1)
    base.check_at_least("fisher_chunk_size", self.fisher_chunk_size, 1)


class EWCState(NamedTuple):
  """params: θ; lr, ewc_lambda: [] (swept or the hyperparameters);
  fisher_sum: A = Σ_k F_k, anchor_sum: b = Σ_k F_k θ*_k (both like params);
  anchor_sq_sum: [] c = Σ_k Σ_i F_k,i θ*_k,i²; tasks: [] tasks consolidated;
  step: [] SGD steps."""
  params: Params
  lr: jax.Array
  ewc_lambda: jax.Array
  fisher_sum: Params
  anchor_sum: Params
  anchor_sq_sum: jax.Array
  tasks: jax.Array
  step: jax.Array


def tree_sum(tree) -> jax.Array:
  return sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def penalty(params: Params, fisher_sum: Params, anchor_sum: Params,
            anchor_sq_sum: jax.Array) -> jax.Array:
  """[] P(θ) = Σ_i A_i θ_i² − 2 b_i θ_i + c, as A (θ − m)² + (c − b m), m = b/A."""
  mean = jax.tree_util.tree_map(
      lambda a, b: jnp.where(a > 0, b / jnp.where(a > 0, a, 1.0), 0.0),
      fisher_sum, anchor_sum)
  quadratic = jax.tree_util.tree_map(lambda a, p, m: a * jnp.square(p - m),
                                     fisher_sum, params, mean)
  constant = anchor_sq_sum - tree_sum(
      jax.tree_util.tree_map(jnp.multiply, anchor_sum, mean))
  return tree_sum(quadratic) + constant  # constant: independent of θ


def chunked(batch: Batch, chunk: int) -> Batch:
  """[n, ...] -> [ceil(n / chunk), chunk, ...], padded with weight-0 rows. Their
  zeros (label 0 of task 0) lie inside task 0's head, so their CE is finite and
  0 · CE adds nothing (a label outside its head would give 0 · ∞ = NaN)."""
  n = batch.y.shape[0]
  pad = -n % chunk
  return jax.tree_util.tree_map(
      lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape(
          (n + pad) // chunk, chunk, *a.shape[1:]), batch)


def make(hp: EWCHparams, context: base.BuildContext) -> base.Learner:
  """Builds the learner (pure functions; the runner compiles them)."""
  network, layout = context.network, context.heads
  loss_fn = base.make_loss(network, layout)

  def init(key: PRNGKey, example: Batch, **sweep: jax.Array) -> EWCState:
    values = base.sweep_values(hp, sweep, SWEEPABLE)
    params = online.init_params(network, key, example)
    zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # distinct buffers
    return EWCState(params=params, lr=values["lr"], ewc_lambda=values["ewc_lambda"],
                    fisher_sum=zeros(), anchor_sum=zeros(),
                    anchor_sq_sum=jnp.zeros((), jnp.float32),
                    tasks=jnp.zeros((), jnp.int32), step=jnp.zeros((), jnp.int32))

  def fisher_diagonal(params: Params, data: Batch) -> Params:
    """F over the n samples of `data` (module docstring), like params."""
    n = data.y.shape[0]
    per_sample = hp.fisher == "mean_per_sample_square"

    def chunk_sum(total, chunk: Batch):
      if per_sample:  # Σ_j g_j² over the chunk; padding rows have g_j = 0
        grads = jax.vmap(lambda one: jax.grad(loss_fn)(
            params, jax.tree_util.tree_map(lambda a: a[None], one)))(chunk)
        stat = jax.tree_util.tree_map(lambda g: jnp.sum(jnp.square(g), 0), grads)
      else:  # Σ_j g_j over the chunk
        stat = jax.grad(lambda p: loss_fn(p, chunk) * jnp.sum(chunk.weight))(params)
      return jax.tree_util.tree_map(jnp.add, total, stat), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(chunk_sum, zeros,
                            chunked(data, min(hp.fisher_chunk_size, n)))
    mean = jax.tree_util.tree_map(lambda t: t / n, total)
    return mean if per_sample else jax.tree_util.tree_map(jnp.square, mean)

  def end_task(state: EWCState, task_x: jax.Array, task_y: jax.Array,
               task: jax.Array) -> EWCState:
    """Adds F_k and θ*_k = θ of the finished task to the running sums."""
    n = task_y.shape[0] if hp.fisher_samples is None else min(
        hp.fisher_samples, task_y.shape[0])
    data = Batch(x=task_x[:n], y=task_y[:n],
                 task=jnp.full((n,), task, jnp.int32), weight=jnp.ones((n,)))
    fisher = fisher_diagonal(state.params, data)
    add = lambda total, f: jax.tree_util.tree_map(jnp.add, total, f)
    weighted = jax.tree_util.tree_map(jnp.multiply, fisher, state.params)
    return state._replace(
        fisher_sum=add(state.fisher_sum, fisher),
        anchor_sum=add(state.anchor_sum, weighted),
        anchor_sq_sum=state.anchor_sq_sum + tree_sum(
            jax.tree_util.tree_map(jnp.multiply, weighted, state.params)),
        tasks=state.tasks + 1)

  def observe(state: EWCState, batch: Batch, epoch: jax.Array
              ) -> tuple[EWCState, Metrics]:
    del epoch

    def glance_loss(params, _):
      ce = loss_fn(params, batch)
      pen = penalty(params, state.fisher_sum, state.anchor_sum, state.anchor_sq_sum)
      return ce + state.ewc_lambda * pen, {"ce": ce, "penalty": pen}

    params, metrics = online.sgd_glances(glance_loss, state.params, state.lr,
                                         hp.glances, hp.grad_clip_norm)
    return state._replace(params=params, step=state.step + hp.glances), metrics

  def summary(state: EWCState) -> Metrics:
    return {**online.summary(state), "consolidated_tasks": state.tasks}

  return base.Learner(init=init, observe=observe,
                      predict=base.make_predict(network, layout),
                      loss=loss_fn,
                      end_task=end_task, summary=summary)


METHODS = {"ewc": base.Method(hparams=EWCHparams, make=make, sweepable=SWEEPABLE,
                              step_sizes=("lr", "ewc_lambda"))}
