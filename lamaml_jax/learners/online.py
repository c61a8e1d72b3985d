"""Online: plain SGD on the stream, no replay (the MER repository's `online.py`).

Per glance g = 0..G-1, on the same incoming batch of B samples:
  θ ← θ − lr · clip(∇θ L(θ)),  L = weighted mean CE on each sample's own head,
where clip is the global-norm clip to `grad_clip_norm` (None: off, as the MER repo).

Also the SGD core that ER (`er.py`) and EWC (`ewc.py`) reuse: the shared
hyperparameters (`OnlineHparams`) and the glance loop.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from lamaml_jax.learners import base
from lamaml_jax.types import Batch, Metrics, Params, PRNGKey


@dataclasses.dataclass(frozen=True)
class OnlineHparams:
  """Hyperparameters of SGD on the stream (defaults: MER repo, Many Permutations).

  Attributes:
    lr: SGD step size.
    glances: SGD steps per incoming batch, all on that batch.
    grad_clip_norm: global-norm clip of the gradient (None: off).
  """
  lr: float = 0.003
  glances: int = 1
  grad_clip_norm: Optional[float] = None

  def __post_init__(self):
    base.check_positive("lr", self.lr)
    base.check_at_least("glances", self.glances, 1)
    if self.grad_clip_norm is not None:
      base.check_positive("grad_clip_norm", self.grad_clip_norm, allow_zero=False)


def init_params(network, key: PRNGKey, example: Batch) -> Params:
  return network.init(key, example.x)["params"]


# (params, per-glance input) -> (loss, {name: [] aux scalar})
GlanceLoss = Callable[[Params, Any], tuple[jax.Array, Metrics]]


def sgd_glances(loss_fn: GlanceLoss, params: Params, lr: jax.Array, glances: int,
                grad_clip_norm: Optional[float], inputs: Any = None
                ) -> tuple[Params, Metrics]:
  """`glances` steps θ ← θ − lr · clip(∇θ loss_fn(θ, inputs[g])) in one `lax.scan`.

  Args:
    inputs: pytree with leading axis `glances` (per-glance randomness), or None.

  Returns:
    (params, metrics): 'loss' (before the last step), 'grad_norm' (its unclipped
    global norm), the loss's aux scalars, all of the last glance, and 'finite'
    (every glance's loss and the new params are finite: a NaN/inf gradient
    reaches the params).
  """
  def glance(params, glance_input):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, glance_input)
    outs = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    grads = base.clip_by_global_norm(grads, grad_clip_norm)
    return base.sgd_step(params, grads, lr), outs

  params, outs = jax.lax.scan(glance, params, inputs, length=glances)
  metrics = jax.tree_util.tree_map(lambda a: a[-1], outs)
  metrics["finite"] = base.all_finite(outs["loss"], params)
  return params, metrics


class OnlineState(NamedTuple):
  """params: θ; lr: [] step size (swept or the hyperparameter); step: [] SGD steps."""
  params: Params
  lr: jax.Array
  step: jax.Array


SWEEPABLE = ("lr",)


def summary(state) -> Metrics:
  """For any state with a `step` field: the SGD steps taken."""
  return {"sgd_steps": state.step}


def make(hp: OnlineHparams, context: base.BuildContext) -> base.Learner:
  """Builds the learner (pure functions; the runner compiles them)."""
  network, layout = context.network, context.heads
  loss_fn = base.make_loss(network, layout)

  def init(key: PRNGKey, example: Batch, **sweep: jax.Array) -> OnlineState:
    values = base.sweep_values(hp, sweep, SWEEPABLE)
    return OnlineState(params=init_params(network, key, example), lr=values["lr"],
                       step=jnp.zeros((), jnp.int32))

  def observe(state: OnlineState, batch: Batch, epoch: jax.Array
              ) -> tuple[OnlineState, Metrics]:
    del epoch
    params, metrics = sgd_glances(lambda p, _: (loss_fn(p, batch), {}), state.params,
                                  state.lr, hp.glances, hp.grad_clip_norm)
    return state._replace(params=params, step=state.step + hp.glances), metrics

  return base.Learner(init=init, observe=observe,
                      predict=base.make_predict(network, layout),
                      loss=loss_fn,
                      summary=summary)


METHODS = {"online": base.Method(hparams=OnlineHparams, make=make, sweepable=SWEEPABLE,
                                 step_sizes=("lr",))}
