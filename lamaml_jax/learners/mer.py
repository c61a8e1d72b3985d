"""MER: Meta-Experience Replay (Riemer et al., 2019, Algorithm 1; the official
`meralg1.py`).

Each incoming example (x, y, t) of a stream batch, one after another:
  θ_A ← θ
  for s = 1..S (S = batches_per_example):
    θ_B ← θ
    rows ← [(x, y, t)] + min(R, |M|) samples drawn from the reservoir M
    for each row, the current example first:
      θ ← θ − lr · clip(∇θ CE(θ; row))          (one single-sample SGD step)
    θ ← θ_B + β (θ − θ_B)                        (within-batch Reptile)
  θ ← θ_A + γ (θ − θ_A)                          (across-batch Reptile)
  M ← reservoir push of (x, y, t)
That is S (1 + R) sequential SGD steps per example: `lax.scan` over the batch's
examples, over the S rounds and over the 1 + R rows, all inside the compiled task
program. While M holds fewer than R samples the missing rows have weight 0 and
their steps are no-ops, so a round takes 1 + min(R, |M|) steps as the official
code's. The reservoir is pushed after each example, so a later example of the
same batch may replay an earlier one (the official loop over `x` does the same).
`--glances` has no meaning for MER (the official code ignores it); S plays its part.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from lamaml_jax import heads
from lamaml_jax import replay as replay_lib
from lamaml_jax.learners import base
from lamaml_jax.learners import online
from lamaml_jax.types import Batch, Metrics, Params, PRNGKey


@dataclasses.dataclass(frozen=True)
class MERHparams:
  """Hyperparameters; defaults are the paper's (appendix G and Table 5, CIFAR-100
  single-pass: replay 10, clip 2.0); its script's CIFAR cell uses replay 25 and
  clip 10.

  Attributes:
    lr: α, the SGD step size of every single-sample step.
    beta: β, within-batch Reptile interpolation (1: keep the S steps' result).
    gamma: γ, across-batch Reptile interpolation (1: a no-op, as the paper's).
    batches_per_example: S rounds per incoming example.
    replay_batch_size: R replay samples per round.
    memory_size: reservoir capacity.
    grad_clip_norm: global-norm clip of each step's gradient (None: off).
    reservoir_inclusive_randint: the official off-by-one reservoir slot draw
      (`replay` module docstring); False: exact reservoir sampling.
    replay_with_replacement: draw a round's replay samples with replacement (the
      official `getBatch` reshuffles the buffer for every draw).
    unroll: `lax.scan` unroll of the 1 + R steps of a round (speed only).
  """
  lr: float = 0.1
  beta: float = 0.1
  gamma: float = 1.0
  batches_per_example: int = 10
  replay_batch_size: int = 10
  memory_size: int = 200
  grad_clip_norm: Optional[float] = 2.0
  reservoir_inclusive_randint: bool = False
  replay_with_replacement: bool = False
  unroll: int = 1

  def __post_init__(self):
    base.check_positive("lr", self.lr)
    base.check_positive("beta", self.beta)
    base.check_positive("gamma", self.gamma)
    base.check_at_least("batches_per_example", self.batches_per_example, 1)
    base.check_at_least("replay_batch_size", self.replay_batch_size, 0)
    base.check_at_least("memory_size", self.memory_size, 1)
    base.check_at_least("unroll", self.unroll, 1)
    if self.grad_clip_norm is not None:
      base.check_positive("grad_clip_norm", self.grad_clip_norm, allow_zero=False)
    base.check_replay_fits(self.replay_batch_size, self.memory_size)


SWEEPABLE = ("lr", "beta", "gamma")


class MERState(NamedTuple):
  """params: θ; lr, beta, gamma: [] step size and interpolations (swept or the
  hyperparameters); memory: the reservoir; step: [] SGD steps taken (real rows
  only); key: PRNG key of the replay draws and reservoir slots."""
  params: Params
  lr: jax.Array
  beta: jax.Array
  gamma: jax.Array
  memory: replay_lib.ReplayBuffer
  step: jax.Array
  key: PRNGKey


def interpolate(start: Params, end: Params, rate: jax.Array) -> Params:
  """Reptile: start + rate (end − start)."""
  return jax.tree_util.tree_map(lambda a, b: a + rate * (b - a), start, end)


def make(hp: MERHparams, context: base.BuildContext) -> base.Learner:
  """Builds the learner (pure functions; the runner compiles them)."""
  network, layout = context.network, context.heads

  def row_loss(params: Params, row: Batch) -> jax.Array:
    one = jax.tree_util.tree_map(lambda a: a[None], row)
    return heads.cross_entropy(network.apply({"params": params}, one.x), one, layout)

  def init(key: PRNGKey, example: Batch, **sweep: jax.Array) -> MERState:
    values = base.sweep_values(hp, sweep, SWEEPABLE)
    init_key, key = jax.random.split(key)
    memory = replay_lib.init(hp.memory_size, example.x.shape[1:], example.x.dtype)
    return MERState(params=online.init_params(network, init_key, example),
                    memory=memory, step=jnp.zeros((), jnp.int32), key=key, **values)

  def sgd_row(state: MERState, params: Params, row: Batch):
    """One single-sample step; a no-op for a padding row (weight 0: zero loss
    and gradient)."""
    loss, grads = jax.value_and_grad(row_loss)(params, row)
    norm = optax.tree.norm(grads)
    grads = base.clip_by_global_norm(grads, hp.grad_clip_norm)
    return base.sgd_step(params, grads, state.lr), (loss, norm)

  def learn_example(state: MERState, params: Params, memory: replay_lib.ReplayBuffer,
                    current: Batch, key: PRNGKey):
    """The S rounds of one example: (new params, per-step loss/norm [S, 1+R])."""
    scores = jax.vmap(lambda k: replay_lib.selection_scores(k, hp.memory_size))(
        jax.random.split(key, hp.batches_per_example))             # [S, capacity]

    def one_round(params, round_scores):
      replay = replay_lib.sample_by_scores(memory, round_scores, hp.replay_batch_size,
                                           hp.replay_with_replacement)
      rows = base.concat_batches(jax.tree_util.tree_map(lambda a: a[None], current),
                                 replay)                            # [1 + R]
      end, outs = jax.lax.scan(lambda p, row: sgd_row(state, p, row), params, rows,
                               unroll=hp.unroll)
      return interpolate(params, end, state.beta), outs + (rows.weight,)

    end, outs = jax.lax.scan(one_round, params, scores)
    return interpolate(params, end, state.gamma), outs

  def observe(state: MERState, batch: Batch, epoch: jax.Array
              ) -> tuple[MERState, Metrics]:
    del epoch
    key, examples_key = jax.random.split(state.key)

    def one_example(carry, xs):
      params, memory = carry
      current, example_key = xs
      round_key, push_key = jax.random.split(example_key)
      new, (losses, norms, weights) = learn_example(state, params, memory, current,
                                                    round_key)
      real = current.weight > 0          # a padding example changes nothing
      params = base.tree_select(real, new, params)
      memory = replay_lib.add(memory, push_key,
                              jax.tree_util.tree_map(lambda a: a[None], current),
                              hp.reservoir_inclusive_randint)
      weights = weights * real
      return (params, memory), (losses, norms, weights)

    (params, memory), (losses, norms, weights) = jax.lax.scan(
        one_example, (state.params, state.memory),
        (batch, jax.random.split(examples_key, batch.y.shape[0])))
    # losses, norms, weights: [B, S, 1 + R]; row 0 of a round is the example.
    steps = jnp.sum(weights)
    metrics = {
        "loss": jnp.sum(losses * weights) / jnp.maximum(steps, 1.0),
        "example_loss": jnp.sum(losses[..., 0] * weights[..., 0])
                        / jnp.maximum(jnp.sum(weights[..., 0]), 1.0),
        "grad_norm": jnp.sum(norms * weights) / jnp.maximum(steps, 1.0),
        "finite": base.all_finite(losses, params),
    }
    new_state = state._replace(params=params, memory=memory, key=key,
                               step=state.step + steps.astype(jnp.int32))
    return new_state, metrics

  return base.Learner(init=init, observe=observe,
                      predict=base.make_predict(network, layout),
                      loss=base.make_loss(network, layout),
                      summary=online.summary)


METHODS = {"mer": base.Method(hparams=MERHparams, make=make, sweepable=SWEEPABLE,
                              step_sizes=("lr", "beta", "grad_clip_norm"),
                              memory_samples=lambda hp, context: hp.memory_size)}
