"""TinyImageNet-200: a TFDS builder for tiny-imagenet-200.zip and the 40x5 benchmark.

TFDS has no TinyImageNet builder; `TinyImagenet` (registered as 'tiny_imagenet')
reads the zip from the manual-download folder without extracting it and writes
splits 'train' (100,000 = 500 per class) and 'validation' (10,000 = 50 per class)
of 64x64x3 uint8 images. Labels index the sorted wnids (torchvision ImageFolder's
order, as in the official La-MAML code). RGB JPEGs are stored byte for byte;
grayscale (and any non-RGB) JPEGs are converted to RGB like the official loader
(`Image.open(f).convert('RGB')`) and re-encoded as JPEG at quality 100 without
chroma subsampling (a difference of about one grey level).
"""
from __future__ import annotations

import io
import posixpath
import zipfile
from typing import Optional

import tensorflow_datasets as tfds
from PIL import Image

from lamaml_jax.data import class_split, image_ops, tfds_source
from lamaml_jax.data.benchmark import Benchmark

ZIP_NAME = "tiny-imagenet-200.zip"
ROOT = "tiny-imagenet-200"
IMAGE_SHAPE = (64, 64, 3)
NUM_CLASSES = 200
CLASSES_PER_TASK = 5
MAX_TASKS = NUM_CLASSES // CLASSES_PER_TASK
# ImageNet statistics, as the official code's TinyImageNet transform.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
  """Tiny ImageNet (200 classes, 64x64) from the manually downloaded zip."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download {ZIP_NAME} (the Tiny ImageNet archive of the Stanford CS231n course)
  and put it, unextracted, in DATA_DIR/downloads/manual/: the next
  make_benchmark('tinyimagenet', data_dir=DATA_DIR) prepares it. Or run
  python -m lamaml_jax.data.prepare --dataset=tiny_imagenet --data_dir=DATA_DIR
  --manual_dir=FOLDER_WITH_THE_ZIP
  """

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="Tiny ImageNet: 200 ImageNet classes at 64x64, 500 train "
        "and 50 validation images per class.",
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "image": tfds.features.Image(shape=IMAGE_SHAPE, encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://cs231n.stanford.edu/",
    )

  def _split_generators(self, dl_manager):
    path = dl_manager.manual_dir / ZIP_NAME
    with path.open("rb") as f, zipfile.ZipFile(f) as zf:
      wnids = zf.read(f"{ROOT}/wnids.txt").decode().split()
    self.info.features["label"].names = sorted(wnids)
    return {"train": self._generate_examples(path, "train"),
            "validation": self._generate_examples(path, "val")}

  def _generate_examples(self, path, split):
    with path.open("rb") as f, zipfile.ZipFile(f) as zf:
      if split == "train":
        items = [(n, posixpath.basename(n).split("_")[0]) for n in zf.namelist()
                 if n.startswith(f"{ROOT}/train/") and n.endswith(".JPEG")]
      else:
        lines = zf.read(f"{ROOT}/val/val_annotations.txt").decode().splitlines()
        items = [(f"{ROOT}/val/images/{l.split()[0]}", l.split()[1])
                 for l in lines if l.strip()]
      for name, wnid in items:
        key = posixpath.basename(name)
        yield key, {"id": key, "image": _rgb_jpeg(zf.read(name)), "label": wnid}


def _rgb_jpeg(data: bytes) -> bytes:
  """JPEG bytes of an RGB image: `data` itself if already RGB."""
  with Image.open(io.BytesIO(data)) as img:
    if img.mode == "RGB" and img.format == "JPEG":
      return data
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=100, subsampling=0)
    return buf.getvalue()


def preprocess(x):
  """[..., 64, 64, 3] uint8 -> float32 normalised with the ImageNet mean/std."""
  return image_ops.normalize(x, MEAN, STD)


# Official code: RandomCrop(64, padding=4) + RandomHorizontalFlip, no jitter.
augment = image_ops.make_augment(pad=4, flip=True, brightness=0.0)


def make(*, seed: int, data_dir: Optional[str] = None,
         num_tasks: Optional[int] = None, samples_per_task: Optional[int] = None,
         val_fraction: float = 0.1, name: str = "tinyimagenet",
         class_order: str = "numpy") -> Benchmark:
  """TinyImageNet 40 tasks x 5 classes; the validation split is the test set.

  Train per task: 5 x 450 = 2250 (10% of each class held out as `val_x`);
  test per task: 5 x 50 = 250. Images [64, 64, 3] uint8.
  """
  if num_tasks is not None and not 1 <= num_tasks <= MAX_TASKS:
    raise ValueError(f"{name}: num_tasks={num_tasks}, but the dataset allows "
                     f"at most {MAX_TASKS} tasks of {CLASSES_PER_TASK} classes.")
  load = lambda split: tfds_source.load_split(
      TinyImagenet, split, dataset="tiny_imagenet", data_dir=data_dir)
  train, test = load("train"), load("validation")
  return class_split.make_benchmark(
      name=name, train=(train["image"], train["label"]),
      test=(test["image"], test["label"]), num_classes=NUM_CLASSES,
      classes_per_task=CLASSES_PER_TASK, seed=seed, num_tasks=num_tasks,
      samples_per_task=samples_per_task, val_fraction=val_fraction,
      class_order=class_order,
      preprocess=preprocess, augment=augment,
      info={"source": "tfds:tiny_imagenet (manual tiny-imagenet-200.zip)"})
