"""Every shipped config loads, validates and builds its learner."""
import importlib

import jax
import jax.numpy as jnp
import pytest

from configs import common
from lamaml_jax import networks
from lamaml_jax.learners import make_learner
from lamaml_jax.types import Batch

INPUT_SHAPES = {"mlp": (784,), "cifar_cnn": (32, 32, 3), "tinyimagenet_cnn": (64, 64, 3)}


def cells():
  for method in ("lamaml", "sync", "cmaml", "laer"):
    for dataset in common.DATASETS:
      settings = ["single_pass"] if dataset in common.MNIST else list(common.SETTINGS)
      for setting in settings:
        for source in common.SOURCES:
          family = dataset.split("_", 1)[1] if dataset in common.MNIST else dataset
          if (method, family, "script") in common._LR:  # pylint: disable=protected-access
            yield method, f"{dataset},{setting},{source}"


CELLS = list(cells())


def test_every_paper_cell_has_a_config():
  methods = {m for m, _ in CELLS}
  assert methods == {"lamaml", "sync", "cmaml", "laer"}
  # La-MAML, Sync, C-MAML: 6 MNIST benchmarks + 2 image benchmarks x 2 settings;
  # La-ER: the image benchmarks only; each in two hyperparameter sources.
  assert len(CELLS) == 2 * (3 * (6 + 4) + 4)


@pytest.mark.parametrize("method,arg", CELLS)
def test_config_builds_learner(method, arg):
  config = importlib.import_module(f"configs.{method}").get_config(arg)
  assert config.method == method
  network = networks.make_network(config.arch, 10)
  learner = make_learner(method, config.learner.to_dict(), network,
                         None if config.arch == "mlp" else 5)
  n = config.batch_size
  example = Batch(x=jnp.zeros((n, *INPUT_SHAPES[config.arch])),
                  y=jnp.zeros((n,), jnp.int32), task=jnp.zeros((n,), jnp.int32),
                  weight=jnp.ones((n,)))
  shapes = jax.eval_shape(learner.init, jax.random.PRNGKey(0), example)
  assert shapes.memory.x.shape[0] == config.learner.memory_size


def test_paper_hyperparameters_of_key_cells():
  c = common.make("lamaml", "cifar100")
  assert (c.epochs, c.learner.glances, c.learner.opt_lr, c.learner.alpha_init,
          c.learner.grad_clip_norm, c.learner.inner_steps, c.learner.first_order) == (
              10, 1, 0.25, 0.1, 1.0, 5, False)
  assert c.learner.inner_grad_clamp == 1.0 and not c.learner.relu_inner_lrs
  assert c.paper_ra == 70.08
  c = common.make("lamaml", "cifar100,single_pass")
  assert (c.epochs, c.learner.glances) == (1, 10)
  c = common.make("lamaml", "mnist_many_permutations")
  assert (c.learner.glances, c.learner.opt_lr, c.learner.alpha_init,
          c.learner.memory_size) == (10, 0.1, 0.1, 500)
  c = common.make("cmaml", "mnist5k_rotations")
  assert not c.learner.learn_lr and c.learner.sync_update and c.learner.opt_wt == 0.1
  c = common.make("lamaml", "mnist_rotations,single_pass,appendix")
  assert (c.learner.alpha_init, c.learner.opt_lr) == (0.3, 0.15)


def test_config_docstrings_list_every_cell_with_its_command():
  for method, arg in CELLS:
    dataset, setting, _ = arg.split(",")
    doc = importlib.import_module(f"configs.{method}").__doc__
    command = (f"python -m lamaml_jax.main --method={method} --dataset={dataset} "
               f"--setting={setting}")
    assert command in doc, command
    ra = common.PAPER_RA.get((method, dataset, setting))
    if ra is not None:
      assert f"paper RA {ra}" in doc
  assert common.make("cmaml", "cifar100,single_pass,appendix").learner.glances == 5


@pytest.mark.parametrize("arg,pattern", [
    ("foo", "Unknown dataset 'foo'"),
    ("cifar100,twice", "Unknown setting 'twice'"),
    ("mnist_rotations,multi_pass", "single-pass benchmark"),
    ("cifar100,multi_pass,blog", "Unknown hyperparameter source"),
])
def test_bad_config_arguments(arg, pattern):
  with pytest.raises(ValueError, match=pattern):
    common.make("lamaml", arg)


def test_laer_has_no_mnist_cell():
  with pytest.raises(ValueError, match="no laer cell on mnist5k_rotations"):
    common.make("laer", "mnist5k_rotations")


def test_unknown_learner_hyperparameter():
  config = common.make("lamaml", "mnist5k_rotations")
  hp = config.learner.to_dict()
  hp["alpha"] = 0.1
  with pytest.raises(ValueError, match="Unknown hyperparameters for lamaml: alpha"):
    make_learner("lamaml", hp, networks.make_network("mlp", 10), None)
  with pytest.raises(ValueError, match="Unknown method 'maml'"):
    make_learner("maml", {}, networks.make_network("mlp", 10), None)


@pytest.mark.parametrize("dataset", common.DATASETS + tuple(common.SYNTHETIC))
def test_config_builds_its_benchmark_and_programs(dataset, monkeypatch):
  """train.build on every dataset's config, TFDS data mocked (no network, no TF).

  tfds.testing.mock_data cannot mock our own TinyImageNet builder (it has no
  metadata in TFDS); tests/data/test_tinyimagenet.py runs that builder on a fake
  tiny-imagenet-200.zip, and here its config gets random images of the same shapes.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from lamaml_jax import train  # pylint: disable=g-import-not-at-top
  from lamaml_jax import data  # pylint: disable=g-import-not-at-top
  from lamaml_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tfds_source, "network_reachable", lambda urls, timeout=3.0: True)
  if dataset == "tinyimagenet":
    monkeypatch.setattr(train, "make_benchmark", lambda name, **kw: data.make_benchmark(
        "synthetic_tinyimagenet", **{k: v for k, v in kw.items() if k != "data_dir"}))
  method = "lamaml"
  config = importlib.import_module(f"configs.{method}").get_config(dataset)
  config.num_tasks = 2
  config.samples_per_task = 20 if dataset in common.MNIST else None
  with tfds.testing.mock_data(num_examples=400):
    members, benchmarks, learner, spec, _, _ = train.build(config)
  bench = benchmarks[0]
  assert bench.num_tasks == 2 and len(members) == 1
  assert bench.train_x.shape[2:] == INPUT_SHAPES[config.arch] or (
      config.arch == "mlp" and bench.train_x.shape[2:] == (784,))
  state = jax.eval_shape(learner.init, jax.random.PRNGKey(0),
                         train.example_batch(bench, config.batch_size))
  assert state.memory.x.shape[1:] == bench.input_shape
