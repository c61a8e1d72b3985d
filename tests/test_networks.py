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
