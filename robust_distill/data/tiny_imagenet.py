"""Tiny ImageNet (200 classes, 64x64) as a TensorFlow-free TFDS builder.

TFDS has no catalog entry for Tiny ImageNet and its download needs an account-free mirror that
this library does not hard-code, so the builder reads the official ``tiny-imagenet-200.zip``
(or its extracted folder) from the manual dir (``--config.data.manual_dir=FOLDER``). Splits:
``train`` (100,000 labelled images) and ``test`` = the official ``val`` folder (10,000 labelled
images; the official test images have no labels). Each example has ``image`` (64, 64, 3) uint8,
``label`` (the index of its WordNet id in sorted order, as ``torchvision.ImageFolder`` would
give) and ``id`` (its index in the split). JPEGs are decoded with Pillow.
"""

import io
import os
import zipfile

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from robust_distill.data import builder_info

ARCHIVE = "tiny-imagenet-200.zip"
HOW_TO_GET = (
  "Tiny ImageNet was not found. Download tiny-imagenet-200.zip (http://cs231n.stanford.edu/"
  "tiny-imagenet-200.zip), put it (or its extracted folder tiny-imagenet-200/) in a folder and "
  "pass that folder as --config.data.manual_dir=FOLDER."
)


class _Tree:
  """Read access to the dataset's files, from the zip or from the extracted folder."""

  def __init__(self, root):
    self.zip = None
    if os.path.isfile(os.path.join(root, ARCHIVE)):
      self.zip = zipfile.ZipFile(os.path.join(root, ARCHIVE))
      self.names = set(self.zip.namelist())
      self.base = "tiny-imagenet-200/"
    else:
      self.base = os.path.join(root, "tiny-imagenet-200") + os.sep
      if not os.path.isdir(self.base):
        raise FileNotFoundError(f"{HOW_TO_GET}\n(nothing in {root})")

  def read(self, rel: str) -> bytes:
    if self.zip is not None:
      return self.zip.read(self.base + rel)
    with open(self.base + rel, "rb") as f:
      return f.read()

  def listdir(self, rel: str) -> list[str]:
    if self.zip is not None:
      pre = self.base + rel.rstrip("/") + "/"
      return sorted(
        {n[len(pre) :].split("/")[0] for n in self.names if n.startswith(pre) and len(n) > len(pre)}
      )
    return sorted(os.listdir(self.base + rel))


def decode(data: bytes) -> np.ndarray:
  """A JPEG as a (64, 64, 3) uint8 array (grey-scale images are repeated over 3 channels)."""
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.uint8)


def read_examples(tree: _Tree, split: str):
  """``(image bytes reader path, wnid)`` pairs of a split, in a fixed order."""
  wnids = tree.read("wnids.txt").decode().split()
  if split == "train":
    for w in sorted(wnids):
      for f in tree.listdir(f"train/{w}/images"):
        yield f"train/{w}/images/{f}", w
  else:
    rows = [
      line.split("\t")
      for line in tree.read("val/val_annotations.txt").decode().splitlines()
      if line.strip()
    ]
    for fname, w, *_ in sorted(rows):
      yield f"val/images/{fname}", w


class TinyImagenetManual(tfds.core.GeneratorBasedBuilder):
  """Tiny ImageNet (Le & Yang 2015) from the manual dir; no TensorFlow needed."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET

  def _info(self):
    return builder_info.image_classification_info(
      self,
      description="Tiny ImageNet: 64x64 colour images of 200 ImageNet classes.",
      shape=(64, 64, 3),
      label=tfds.features.ClassLabel(num_classes=200),
      homepage="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    )

  def _split_generators(self, dl_manager):
    try:
      root = os.fspath(dl_manager.manual_dir)
    except Exception as e:  # no manual dir configured
      raise FileNotFoundError(HOW_TO_GET) from e
    tree = _Tree(root)
    return {
      "train": self._generate_examples(tree, "train"),
      "test": self._generate_examples(tree, "test"),
    }

  def _generate_examples(self, tree, split):
    classes = {w: i for i, w in enumerate(sorted(tree.read("wnids.txt").decode().split()))}
    for i, (path, w) in enumerate(read_examples(tree, split)):
      yield i, {"image": decode(tree.read(path)), "label": classes[w], "id": i}
