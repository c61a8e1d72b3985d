r"""Prepares a TFDS dataset as array_record files, without TensorFlow.

On a machine with network access (or, for tiny_imagenet, with the zip):

  python -m lamaml_jax.data.prepare --dataset=cifar100 --data_dir=DATA_DIR
  python -m lamaml_jax.data.prepare --dataset=mnist --data_dir=DATA_DIR
  python -m lamaml_jax.data.prepare --dataset=tiny_imagenet --data_dir=DATA_DIR \
      --manual_dir=FOLDER_WITH_tiny-imagenet-200.zip

This writes DATA_DIR/<dataset>/<version>/. Copy DATA_DIR/<dataset> into the data
directory of the machine that trains and pass that directory as --data_dir (or
set TFDS_DATA_DIR). Downloads are cached in DATA_DIR/downloads.
"""
from __future__ import annotations

from absl import app
from absl import flags

_DATASET = flags.DEFINE_enum("dataset", None, ["mnist", "cifar100", "tiny_imagenet"],
                             "Dataset to prepare.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default "
                                "TFDS_DATA_DIR or ~/tensorflow_datasets).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "tiny_imagenet: folder holding "
                                  "tiny-imagenet-200.zip (default "
                                  "DATA_DIR/downloads/manual).")


def builder_class(dataset: str):
  """The TF-free builder class of `dataset`."""
  # pylint: disable=g-import-not-at-top
  if dataset == "tiny_imagenet":
    from lamaml_jax.data import tinyimagenet
    return tinyimagenet.TinyImagenet
  from lamaml_jax.data import tfds_builders
  return {"mnist": tfds_builders.Mnist, "cifar100": tfds_builders.Cifar100}[dataset]


def main(argv):
  del argv
  from lamaml_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  builder = tfds_source.make_builder(builder_class(_DATASET.value), _DATA_DIR.value)
  tfds_source.prepare(builder, manual_dir=_MANUAL_DIR.value)
  print(f"Prepared {builder.name} {builder.version} at {builder.data_path}: "
        f"{dict(builder.info.splits)}")


if __name__ == "__main__":
  app.run(main)
