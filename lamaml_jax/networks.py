"""Flax networks of the paper (DESIGN §2.11).

- `mlp`: MNIST, 784-100-100-10 with ReLU (89,610 parameters).
- `cifar_cnn`: three 3x3 stride-2 convs of 160 channels (padding 1), ReLU, flatten
  (4*4*160 = 2560), FC 320-320, output 100 (1,419,940 parameters).
- `tinyimagenet_cnn`: four such convs on 64x64 inputs, FC 640-640, output 200.
No batch norm. Kaiming-normal weights (untruncated, std sqrt(2 / fan_in), as torch's
`kaiming_normal_`) and zero biases.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _dense(features: int) -> nn.Dense:
  return nn.Dense(features, kernel_init=kaiming_normal,
                  bias_init=nn.initializers.zeros)


class MLP(nn.Module):
  """Fully connected ReLU network on flattened inputs: [B, ...] -> [B, num_outputs]."""
  hidden: Sequence[int] = (100, 100)
  num_outputs: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(_dense(width)(x))
    return _dense(self.num_outputs)(x)


class ConvNet(nn.Module):
  """Strided conv net of the paper: [B, H, W, C] -> [B, num_outputs]."""
  num_convs: int = 3
  channels: int = 160
  hidden: Sequence[int] = (320, 320)
  num_outputs: int = 100

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for _ in range(self.num_convs):
      x = nn.Conv(self.channels, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                  kernel_init=kaiming_normal, bias_init=nn.initializers.zeros)(x)
      x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(_dense(width)(x))
    return _dense(self.num_outputs)(x)


ARCHITECTURES = ("mlp", "cifar_cnn", "tinyimagenet_cnn")


def make_network(arch: str, num_outputs: int) -> nn.Module:
  """Returns the Flax module named `arch` with `num_outputs` logits."""
  if arch == "mlp":
    return MLP(hidden=(100, 100), num_outputs=num_outputs)
  if arch == "cifar_cnn":
    return ConvNet(num_convs=3, hidden=(320, 320), num_outputs=num_outputs)
  if arch == "tinyimagenet_cnn":
    return ConvNet(num_convs=4, hidden=(640, 640), num_outputs=num_outputs)
  raise ValueError(f"Unknown arch {arch!r}; choose one of {ARCHITECTURES}.")


def num_params(params) -> int:
  """Total number of scalars in a parameter pytree."""
  return sum(int(jnp.size(p)) for p in jax.tree_util.tree_leaves(params))
