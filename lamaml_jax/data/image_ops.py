"""Jittable image preprocessing and training augmentation (NHWC, uint8 in)."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def normalize(x: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """[..., H, W, C] uint8 (or float in [0, 255]) -> float32 (x / 255 - mean) / std."""
  x = jnp.asarray(x, jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def make_augment(*, pad: int = 4, flip: bool = True, brightness: float = 0.0):
  """Returns augment(key, x): [B, H, W, C] -> [B, H, W, C], same dtype.

  Per sample, like torchvision's RandomCrop(H, padding=pad) (zero padding, offsets
  uniform in [0, 2 pad]), RandomHorizontalFlip(0.5) and, if brightness > 0,
  ColorJitter(brightness) on a PIL image: multiply by a factor uniform in
  [max(0, 1 - brightness), 1 + brightness], truncate to an integer (PIL's blend)
  and clip to [0, 255]. The result stays uint8, so preprocess(augment(k, x)) works.
  """

  def augment(key: jax.Array, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    k_crop, k_flip, k_bright = jax.random.split(key, 3)
    if pad:
      offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)
      padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
      crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
      x = jax.vmap(crop)(padded, offsets)
    if flip:
      do_flip = jax.random.bernoulli(k_flip, 0.5, (b,))
      x = jnp.where(do_flip[:, None, None, None], x[:, :, ::-1], x)
    if brightness > 0:
      factor = jax.random.uniform(k_bright, (b, 1, 1, 1), jnp.float32,
                                  max(0.0, 1.0 - brightness), 1.0 + brightness)
      y = jnp.floor(x.astype(jnp.float32) * factor)
      x = jnp.clip(y, 0, 255).astype(x.dtype)
    return x

  return augment
