"""Fashion-MNIST as a TensorFlow-free TFDS builder (array_record, ``tfds.features.Tensor``).

Sources, in order:
  1. a manual dir holding the four idx ``.gz`` files (default: the Debian package
     ``dataset-fashion-mnist``'s ``/usr/share/datasets/fashion-mnist``);
  2. the network: the same files from the Fashion-MNIST mirror TFDS's own ``fashion_mnist``
     downloads from (no registered checksums are used: the Debian ``.gz`` files have other
     compressed bytes than TFDS's registered ones although their contents are identical, so this
     builder verifies the decoded idx headers and sizes instead);
  3. neither: a ``FileNotFoundError`` that says how to get the data.

The builder is named ``fashion_mnist_idx`` so that it never collides with TFDS's catalog entry.
Each example has ``image`` (28, 28, 1) uint8, ``label`` and ``id`` (its index in the split, the
stable key that teacher logits are joined on).

``load_arrays`` is the fast path of the in-memory loader: when the idx files are on this machine
it reads them directly (under a second) and puts the examples in the order that the prepared
TFDS dataset stores them in (TFDS sorts a split's examples by a salted hash of their keys), so
the arrays, ids and hence the validation split and "the first N test points" are exactly those
of the TFDS path, without building the array_record files (about 10 s) or decoding 70,000
records (3-6 s). ``tests/test_data.py`` checks the two paths against each other.
"""

import gzip
import os
import socket
import urllib.parse

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import hashing

from robust_distill.data import builder_info

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
MIRROR_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)

HOW_TO_GET = (
  "Fashion-MNIST was not found. Either install the Debian package "
  "(`sudo apt-get install dataset-fashion-mnist`, files in " + DEBIAN_DIR + "), or put "
  "train-/t10k-{images-idx3,labels-idx1}-ubyte.gz in a folder and pass it as "
  "--config.data.manual_dir=FOLDER, or run once with network access so that the files can "
  "be downloaded from " + MIRROR_URL
)


def read_idx(path: str, *, images: bool) -> np.ndarray:
  """Reads a gzip'd idx file (28x28 uint8 images or uint8 labels) and checks its header."""
  with gzip.open(path, "rb") as f:
    raw = f.read()
  magic = int.from_bytes(raw[:4], "big")
  count = int.from_bytes(raw[4:8], "big")
  want = 2051 if images else 2049
  header = 16 if images else 8
  size = count * (784 if images else 1)
  if magic != want or len(raw) != header + size:
    raise ValueError(
      f"{path}: not a valid idx file (magic {magic}, expected {want}; "
      f"{len(raw) - header} data bytes, header says {size})"
    )
  if images:
    return np.frombuffer(raw, np.uint8, offset=16).reshape(count, 28, 28, 1)
  return np.frombuffer(raw, np.uint8, offset=8).astype(np.int64)


def read_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
  """A split's images and labels from its two idx files, checked to be of equal length."""
  images = read_idx(images_path, images=True)
  labels = read_idx(labels_path, images=False)
  if len(images) != len(labels):
    raise ValueError(
      f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
    )
  return images, labels


def local_files(manual_dir: str = "") -> dict[str, str] | None:
  """The four idx files' paths in ``manual_dir`` or the Debian package's folder (the first that
  holds all four), or None."""
  names = [n for pair in FILES.values() for n in pair]
  for d in (manual_dir, DEBIAN_DIR):
    if d and all(os.path.exists(os.path.join(d, n)) for n in names):
      return {n: os.path.join(d, n) for n in names}
  return None


def tfds_order(split: str, n: int) -> np.ndarray:
  """The order in which TFDS stores examples with keys ``0 .. n-1`` in split ``split``: sorted
  by the hash of the key salted with the split's name (``FashionMnistIdx`` keys each example
  by its index in the idx file)."""
  h = hashing.Hasher(split)
  return np.asarray(sorted(range(n), key=h.hash_key), np.int64)


def load_arrays(split: str, manual_dir: str = "") -> dict[str, np.ndarray] | None:
  """``{"image", "label", "id"}`` of ``split`` ('train' or 'test') read from local idx files,
  in the prepared TFDS dataset's order; None when the files are not on this machine."""
  paths = local_files(manual_dir)
  if paths is None or split not in FILES:
    return None
  img, lab = FILES[split]
  images, labels = read_pair(paths[img], paths[lab])
  order = tfds_order(split, len(labels))
  return {"image": images[order], "label": labels[order].astype(np.int32), "id": order}


def _reachable(url: str, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (so that an
  offline machine fails at once instead of after TFDS's download retries)."""
  u = urllib.parse.urlparse(url)
  try:
    with socket.create_connection(
      (u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=timeout
    ):
      return True
  except OSError:
    return False


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST (Xiao et al. 2017) read from idx files; no TensorFlow needed."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET

  def _info(self):
    return builder_info.image_classification_info(
      self,
      description="Fashion-MNIST 28x28 grey-scale clothing images, 10 classes.",
      shape=(28, 28, 1),
      label=tfds.features.ClassLabel(names=list(CLASS_NAMES)),
      homepage="https://github.com/zalandoresearch/fashion-mnist",
    )

  def _locate(self, dl_manager):
    manual = None
    try:
      manual = os.fspath(dl_manager.manual_dir)
    except Exception:  # no manual dir configured
      manual = None
    local = local_files(manual or "")
    if local is not None:
      return local
    names = [n for pair in FILES.values() for n in pair]
    if not _reachable(MIRROR_URL):
      raise FileNotFoundError(f"{HOW_TO_GET}\n(no network: cannot reach {MIRROR_URL})")
    try:
      paths = dl_manager.download({n: MIRROR_URL + n for n in names})
    except Exception as e:  # any download failure
      raise FileNotFoundError(f"{HOW_TO_GET}\n(download failed: {type(e).__name__}: {e})") from e
    return {n: os.fspath(p) for n, p in paths.items()}

  def _split_generators(self, dl_manager):
    paths = self._locate(dl_manager)
    return {
      split: self._generate_examples(paths[img], paths[lab]) for split, (img, lab) in FILES.items()
    }

  def _generate_examples(self, images_path, labels_path):
    images, labels = read_pair(images_path, labels_path)
    for i in range(len(labels)):
      yield i, {"image": images[i], "label": int(labels[i]), "id": i}
