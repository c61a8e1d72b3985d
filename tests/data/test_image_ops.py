"""CIFAR / TinyImageNet augmentation and normalisation."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from lamaml_jax.data import cifar100, image_ops, tinyimagenet


def _images(b=16, size=32, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (b, size, size, 3), dtype=np.uint8)


def test_augment_shape_dtype_and_determinism():
  x = _images()
  aug = jax.jit(cifar100.augment)
  y1 = aug(jax.random.key(0), x)
  y2 = aug(jax.random.key(0), x)
  y3 = aug(jax.random.key(1), x)
  chex.assert_shape(y1, x.shape)
  assert y1.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
  assert not np.array_equal(np.asarray(y1), np.asarray(y3))
  # Per-sample randomness: samples of one batch are not all treated alike.
  same = np.stack([x[0]] * 16)
  y = np.asarray(aug(jax.random.key(2), same))
  assert len({yi.tobytes() for yi in y}) > 8


def test_flips_really_flip():
  flip_only = image_ops.make_augment(pad=0, flip=True, brightness=0.0)
  x = _images(64)
  y = np.asarray(flip_only(jax.random.key(3), x))
  flipped = np.array([np.array_equal(yi, xi[:, ::-1]) for xi, yi in zip(x, y)])
  kept = np.array([np.array_equal(yi, xi) for xi, yi in zip(x, y)])
  assert np.all(flipped ^ kept)
  assert 10 < flipped.sum() < 54


def test_crop_is_a_window_of_the_zero_padded_image():
  crop_only = image_ops.make_augment(pad=4, flip=False, brightness=0.0)
  x = _images(32)
  y = np.asarray(crop_only(jax.random.key(4), x))
  padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
  offsets = []
  for p, yi in zip(padded, y):
    hits = [(i, j) for i in range(9) for j in range(9)
            if np.array_equal(p[i:i + 32, j:j + 32], yi)]
    assert hits, "output is not a 32x32 window of the padded image"
    offsets.append(hits[0])
  assert len(set(offsets)) > 5


def test_brightness_scales_and_truncates_like_pil():
  b = 63 / 255
  jitter = image_ops.make_augment(pad=0, flip=False, brightness=b)
  x = np.zeros((200, 4, 4, 3), np.uint8)
  x[:, :2], x[:, 2], x[:, 3] = 100, 200, 250
  y = np.asarray(jitter(jax.random.key(5), x)).astype(int)
  lo, hi, top = y[:, 0, 0, 0], y[:, 2, 2, 0], y[:, 3, 3, 0]
  assert np.all(lo >= np.floor(100 * (1 - b))) and np.all(lo <= np.floor(100 * (1 + b)))
  # floor(200 f) is 2 floor(100 f) or one more, clipped at 255.
  assert np.all((hi == 2 * lo) | (hi == 2 * lo + 1))
  assert np.all(top >= np.floor(250 * (1 - b)))  # clipped, not wrapped around
  assert np.any(top == 255) and np.any(lo < 90) and np.any(lo > 110)
  assert np.all(y[:, :2] == lo[:, None, None, None])  # one factor per image


def test_preprocess_normalises_and_composes_with_augment():
  x = _images(4)
  out = jax.jit(lambda k, v: cifar100.preprocess(cifar100.augment(k, v)))(
      jax.random.key(0), x)
  chex.assert_shape(out, x.shape)
  chex.assert_type(out, np.float32)
  ref = (x / 255.0 - np.array(cifar100.MEAN)) / np.array(cifar100.STD)
  np.testing.assert_allclose(np.asarray(cifar100.preprocess(x)), ref, rtol=1e-5, atol=1e-5)
  tin = _images(2, 64)
  ref = (tin / 255.0 - np.array((0.485, 0.456, 0.406))) / np.array((0.229, 0.224, 0.225))
  np.testing.assert_allclose(np.asarray(tinyimagenet.preprocess(tin)), ref,
                             rtol=1e-5, atol=1e-5)
  chex.assert_shape(tinyimagenet.augment(jax.random.key(0), tin), tin.shape)
