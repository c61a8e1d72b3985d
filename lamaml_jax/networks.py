"""Flax networks of the paper (appendix G; the official code's architectures).

- `mlp`: MNIST, 784-100-100-10 with ReLU (89,610 parameters).
- `cifar_cnn`: three 3x3 stride-2 convs of 160 channels (padding 1), ReLU, flatten
  (4*4*160 = 2560), FC 320-320, output 100 (1,419,940 parameters).
- `tinyimagenet_cnn`: four such convs on 64x64 inputs, FC 640-640, output 200.
No batch norm. Kaiming-normal weights (untruncated, std sqrt(2 / fan_in), as torch's
`kaiming_normal_`) and zero biases.

Convolutions on CPU are computed as im2col + matmul (`PatchConv`): XLA:CPU runs
`conv_general_dilated` inside a rolled loop (`lax.scan`, `fori_loop`) on a slow
path, about 25 times slower than im2col (BUILD.md, "Measurements behind the
design"). A whole task is one rolled loop, so this matters. On GPU/TPU `nn.Conv` is used. Both have identical parameters.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _param_dtype():
  """float32, or float64 in x64 mode (as `nn.initializers` and `PatchConv`)."""
  return jnp.result_type(float)


def _dense(features: int) -> nn.Dense:
  return nn.Dense(features, kernel_init=kaiming_normal,
                  bias_init=nn.initializers.zeros, param_dtype=_param_dtype())


def transposed_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """aᵀ b for a [N, K], b [N, O] (a weight gradient), computed as (bᵀ a)ᵀ.

  XLA:CPU runs aᵀ b, a contraction over both operands' leading axis, as a plain
  `dot` outside its fast matmul library; (bᵀ a)ᵀ is a library matmul (BUILD.md
  has the measurement) for the CIFAR net's first-layer kernel
  gradient on 20 images (N = 5120, K = 27, O = 160).
  """
  return jnp.dot(b.T, a).T


def _patches(x: jax.Array, kh: int, kw: int, stride: int, padding: int) -> jax.Array:
  """im2col: [B, H, W, C] -> [B, H', W', kh*kw*C] (tap-major, channel-minor)."""
  h, w = x.shape[1:3]
  ho = (h + 2 * padding - kh) // stride + 1
  wo = (w + 2 * padding - kw) // stride + 1
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  return jnp.concatenate(
      [xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :]
       for i in range(kh) for j in range(kw)], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def im2col_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  """conv_general_dilated(x, kernel) in NHWC/HWIO via strided slices and a matmul.

  Its backward pass is written out (`_im2col_conv_bwd`): autodiff of the same
  forward left XLA:CPU computing the kernel gradient PᵀD the slow way (see
  `transposed_matmul`); the same numbers to float rounding, faster (BUILD.md).

  Args:
    x: [B, H, W, C].
    kernel: [kh, kw, C, O].

  Returns:
    [B, H', W', O] with H' = (H + 2 padding - kh) // stride + 1 (likewise W').
  """
  return _im2col_conv_fwd(x, kernel, stride, padding)[0]


def _im2col_conv_fwd(x, kernel, stride, padding):
  kh, kw, c, o = kernel.shape
  patches = _patches(x, kh, kw, stride, padding)
  return patches @ kernel.reshape(kh * kw * c, o), (x, patches, kernel)


def _im2col_conv_bwd(stride, padding, residuals, dy):
  """Kernel gradient PᵀD as one 2-D matmul; input gradient by col2im (the
  transpose of `_patches`, which XLA drops for the first layer)."""
  x, patches, kernel = residuals
  kh, kw, c, o = kernel.shape
  p2 = patches.reshape(-1, kh * kw * c)  # [B H' W', kh kw C]
  d2 = dy.reshape(-1, o)  # [B H' W', O]
  d_kernel = transposed_matmul(p2, d2).reshape(kernel.shape)
  d_patches = (d2 @ kernel.reshape(kh * kw * c, o).T).reshape(patches.shape)
  col2im = jax.linear_transpose(lambda v: _patches(v, kh, kw, stride, padding), x)
  return col2im(d_patches)[0], d_kernel


im2col_conv.defvjp(_im2col_conv_fwd, _im2col_conv_bwd)


class PatchConv(nn.Module):
  """A 3x3 convolution with `nn.Conv`'s parameters, computed by `im2col_conv`."""
  features: int
  stride: int = 2
  padding: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", kaiming_normal, (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return im2col_conv(x, kernel, self.stride, self.padding) + bias


class MLP(nn.Module):
  """Fully connected ReLU network on flattened inputs: [B, ...] -> [B, num_outputs].

  `features=True` returns the penultimate features instead, the activations the
  output layer reads ([B, hidden[-1]]); the parameters are the same.
  """
  hidden: Sequence[int] = (100, 100)
  num_outputs: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, features: bool = False) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(_dense(width)(x))
    if features:
      return x
    return _dense(self.num_outputs)(x)


class ConvNet(nn.Module):
  """Strided conv net of the paper: [B, H, W, C] -> [B, num_outputs].

  conv_impl: 'im2col' (`PatchConv`) or 'xla' (`nn.Conv`); same parameters.
  `features=True` returns the penultimate features [B, hidden[-1]] (as `MLP`).
  """
  num_convs: int = 3
  channels: int = 160
  hidden: Sequence[int] = (320, 320)
  num_outputs: int = 100
  conv_impl: str = "im2col"

  @nn.compact
  def __call__(self, x: jax.Array, features: bool = False) -> jax.Array:
    for i in range(self.num_convs):
      if self.conv_impl == "im2col":
        x = PatchConv(self.channels, name=f"Conv_{i}")(x)
      else:
        x = nn.Conv(self.channels, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                    kernel_init=kaiming_normal, bias_init=nn.initializers.zeros,
                    param_dtype=_param_dtype(), name=f"Conv_{i}")(x)
      x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(_dense(width)(x))
    if features:
      return x
    return _dense(self.num_outputs)(x)


ARCHITECTURES = ("mlp", "cifar_cnn", "tinyimagenet_cnn")
CONV_IMPLS = ("auto", "im2col", "xla")


def make_network(arch: str, num_outputs: int, conv_impl: str = "auto") -> nn.Module:
  """Returns the Flax module named `arch` with `num_outputs` logits.

  conv_impl: 'auto' picks 'im2col' on CPU and 'xla' elsewhere (module docstring).
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"Unknown conv_impl {conv_impl!r}; choose one of {CONV_IMPLS}.")
  if conv_impl == "auto":
    conv_impl = "im2col" if jax.default_backend() == "cpu" else "xla"
  if arch == "mlp":
    return MLP(hidden=(100, 100), num_outputs=num_outputs)
  if arch == "cifar_cnn":
    return ConvNet(num_convs=3, hidden=(320, 320), num_outputs=num_outputs,
                   conv_impl=conv_impl)
  if arch == "tinyimagenet_cnn":
    return ConvNet(num_convs=4, hidden=(640, 640), num_outputs=num_outputs,
                   conv_impl=conv_impl)
  raise ValueError(f"Unknown arch {arch!r}; choose one of {ARCHITECTURES}.")


def num_params(params) -> int:
  """Total number of scalars in a parameter pytree."""
  return sum(int(jnp.size(p)) for p in jax.tree_util.tree_leaves(params))
