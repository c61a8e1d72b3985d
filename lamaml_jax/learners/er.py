"""ER: experience replay with a reservoir (the official `eralg4.py` without
`--learn_lr`).

One `observe` call on a batch of B samples, per glance g = 0..G-1:
  1. draw min(R, |M|) samples from the reservoir M (R = replay_batch_size; the
     other R − |M| rows have weight 0 while M holds fewer than R);
  2. L = Σ_i w_i CE_i / Σ_i w_i over the R + B rows [replay; batch], each on its own
     head (denominator min(R, |M|) + B);
  3. θ ← θ − lr · clip(∇θ L) (global norm `grad_clip_norm`).
Then all B samples are pushed to the reservoir (every call, every epoch). M is only
read inside the glance loop and written once after it.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from lamaml_jax import heads
from lamaml_jax import replay as replay_lib
from lamaml_jax.learners import base
from lamaml_jax.learners import online
from lamaml_jax.types import Batch, Metrics, Params, PRNGKey


@dataclasses.dataclass(frozen=True)
class ERHparams(online.OnlineHparams):
  """Hyperparameters (official defaults; its CIFAR script uses replay_batch_size 1).

  Attributes:
    lr, glances: as `OnlineHparams`.
    grad_clip_norm: global-norm clip of the gradient (None: off).
    replay_batch_size: R replay samples joined to each glance's batch (0: none).
    memory_size: reservoir capacity.
    reservoir_inclusive_randint: the official off-by-one reservoir slot draw
      (`replay` module docstring); False: exact reservoir sampling.
    replay_with_replacement: draw replay samples with replacement (official).
  """
  lr: float = 0.03
  grad_clip_norm: Optional[float] = 2.0
  replay_batch_size: int = 10
  memory_size: int = 200
  reservoir_inclusive_randint: bool = False
  replay_with_replacement: bool = False

  def __post_init__(self):
    super().__post_init__()
    base.check_at_least("memory_size", self.memory_size, 1)
    base.check_at_least("replay_batch_size", self.replay_batch_size, 0)
    base.check_replay_fits(self.replay_batch_size, self.memory_size)


class ERState(NamedTuple):
  """params: θ; lr: [] step size; memory: the reservoir; step: [] SGD steps;
  key: PRNG key of the replay draws and reservoir slots."""
  params: Params
  lr: jax.Array
  memory: replay_lib.ReplayBuffer
  step: jax.Array
  key: PRNGKey


def make(hp: ERHparams, context: base.BuildContext) -> base.Learner:
  """Builds the learner (pure functions; the runner compiles them)."""
  network, layout = context.network, context.heads
  num_replay = hp.replay_batch_size

  def init(key: PRNGKey, example: Batch, **sweep: jax.Array) -> ERState:
    values = base.sweep_values(hp, sweep, online.SWEEPABLE)
    init_key, key = jax.random.split(key)
    memory = replay_lib.init(hp.memory_size, example.x.shape[1:], example.x.dtype)
    return ERState(params=online.init_params(network, init_key, example),
                   lr=values["lr"], memory=memory, step=jnp.zeros((), jnp.int32),
                   key=key)

  def observe(state: ERState, batch: Batch, epoch: jax.Array
              ) -> tuple[ERState, Metrics]:
    del epoch
    key, replay_key, push_key = jax.random.split(state.key, 3)
    # Every glance's replay draw at once: [G, memory_size] uniforms.
    scores = jax.vmap(lambda k: replay_lib.selection_scores(k, hp.memory_size))(
        jax.random.split(replay_key, hp.glances))

    def glance_loss(params, glance_scores):
      replay = replay_lib.sample_by_scores(state.memory, glance_scores, num_replay,
                                           hp.replay_with_replacement)
      joined = base.concat_batches(replay, batch)
      logits = network.apply({"params": params}, joined.x)
      replay_loss = heads.cross_entropy(logits[:num_replay], replay, layout)
      return heads.cross_entropy(logits, joined, layout), {
          "replay_loss": replay_loss}  # 0 while the buffer is empty

    params, metrics = online.sgd_glances(glance_loss, state.params, state.lr,
                                         hp.glances, hp.grad_clip_norm, scores)
    memory = replay_lib.add(state.memory, push_key, batch,
                            hp.reservoir_inclusive_randint)
    new_state = state._replace(params=params, memory=memory,
                               step=state.step + hp.glances, key=key)
    return new_state, metrics

  return base.Learner(init=init, observe=observe,
                      predict=base.make_predict(network, layout),
                      loss=base.make_loss(network, layout),
                      summary=online.summary)


METHODS = {"er": base.Method(hparams=ERHparams, make=make, sweepable=online.SWEEPABLE,
                             step_sizes=("lr", "grad_clip_norm"),
                             memory_samples=lambda hp, context: hp.memory_size)}
