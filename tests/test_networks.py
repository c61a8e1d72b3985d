"""Networks: parameter counts of the paper, initialisation, head masking."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamaml_jax import heads, networks
from lamaml_jax.types import Batch


@pytest.mark.parametrize("arch,shape,outputs,count", [
    ("mlp", (2, 784), 10, 89_610),
    ("cifar_cnn", (2, 32, 32, 3), 100, 1_419_940),
    ("tinyimagenet_cnn", (2, 64, 64, 3), 200, 2_873_640),
])
def test_parameter_counts_and_output_shape(arch, shape, outputs, count):
  net = networks.make_network(arch, outputs)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros(shape))["params"]
  assert networks.num_params(params) == count
  chex.assert_shape(net.apply({"params": params}, jnp.ones(shape)), (2, outputs))


def test_kaiming_normal_untruncated_and_zero_bias():
  params = networks.make_network("mlp", 10).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 784)))["params"]
  w = np.asarray(params["Dense_0"]["kernel"])
  np.testing.assert_allclose(w.std(), np.sqrt(2 / 784), rtol=0.02)
  assert np.abs(w).max() > 2.5 * np.sqrt(2 / 784)  # truncation at 2 std would cap it
  assert not np.any(params["Dense_0"]["bias"])


def test_unknown_arch():
  with pytest.raises(ValueError, match="mlp"):
    networks.make_network("resnet", 10)


def test_mask_logits_and_cross_entropy_equal_slicing():
  logits = jax.random.normal(jax.random.PRNGKey(0), (3, 10))
  task = jnp.array([0, 1, 0])
  masked = heads.mask_logits(logits, task, 5)
  assert np.all(np.isneginf(masked[1, :5])) and np.all(np.isfinite(masked[1, 5:]))
  y = jnp.array([2, 7, 4])
  batch = Batch(x=None, y=y, task=task, weight=jnp.array([1.0, 1.0, 0.0]))
  want = [-jax.nn.log_softmax(logits[i, 5 * t:5 * t + 5])[y[i] - 5 * t]
          for i, t in enumerate([0, 1])]
  np.testing.assert_allclose(heads.cross_entropy(logits, batch, 5), np.mean(want), rtol=1e-6)
  np.testing.assert_array_equal(heads.mask_logits(logits, task, None), logits)


@pytest.mark.parametrize("stride,padding", [(2, 1), (1, 1), (1, 0)])
def test_im2col_conv_equals_xla_conv(stride, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8, 3))
  k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))
  want = jax.lax.conv_general_dilated(x, k, (stride, stride), [(padding, padding)] * 2,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(networks.im2col_conv(x, k, stride, padding), want,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,padding", [(2, 1), (1, 1), (1, 0)])
def test_im2col_conv_first_and_second_derivatives_equal_xla_conv(stride, padding):
  """The written-out backward pass, and its own reverse-mode derivative (used by
  second-order La-MAML), against autodiff of XLA's convolution."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8, 3))
  k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))
  xla = lambda x, k, s, p: jax.lax.conv_general_dilated(  # pylint: disable=g-long-lambda
      x, k, (s, s), [(p, p)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def derivatives(conv):
    f = lambda x, k: jnp.sum(jnp.sin(conv(x, k, stride, padding)))
    grads = jax.grad(f, argnums=(0, 1))(x, k)
    v = jax.random.normal(jax.random.PRNGKey(2), k.shape)
    hvp = jax.grad(lambda x, k: jnp.vdot(jax.grad(f, argnums=1)(x, k), v),
                   argnums=(0, 1))(x, k)
    return grads, hvp

  chex.assert_trees_all_close(derivatives(networks.im2col_conv), derivatives(xla),
                              rtol=1e-4, atol=1e-4)


def test_conv_implementations_share_parameters_and_outputs():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  patch = networks.make_network("cifar_cnn", 100, conv_impl="im2col")
  xla = networks.make_network("cifar_cnn", 100, conv_impl="xla")
  params = patch.init(jax.random.PRNGKey(1), x)["params"]
  chex.assert_trees_all_equal_shapes(params, xla.init(jax.random.PRNGKey(1), x)["params"])
  np.testing.assert_allclose(patch.apply({"params": params}, x),
                             xla.apply({"params": params}, x), rtol=1e-4, atol=1e-4)
  # Kaiming normal over fan_in = 3 * 3 * 160 for the second conv.
  np.testing.assert_allclose(np.std(params["Conv_1"]["kernel"]), np.sqrt(2 / 1440), rtol=0.02)


@pytest.mark.parametrize("arch,shape,width", [("mlp", (3, 784), 100),
                                              ("cifar_cnn", (2, 32, 32, 3), 320)])
def test_penultimate_features_feed_the_output_layer(arch, shape, width):
  """`features=True` returns the activations the last Dense reads: applying that
  layer's kernel and bias to them gives the default output (the logits), from the
  same parameters."""
  net = networks.make_network(arch, 10)
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  params = net.init(jax.random.PRNGKey(1), x)["params"]
  feats = net.apply({"params": params}, x, features=True)
  chex.assert_shape(feats, (shape[0], width))
  assert np.all(np.asarray(feats) >= 0)  # after the ReLU
  last = params["Dense_2"]
  np.testing.assert_allclose(feats @ last["kernel"] + last["bias"],
                             net.apply({"params": params}, x), rtol=1e-5, atol=1e-5)
