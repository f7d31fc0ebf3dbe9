"""Data sources: TFDS splits as in-memory arrays or lazily decoded records, and synthetic data.

``load_split`` reads a split through ``tfds.data_source`` (array_record, random access, no
TensorFlow). Small datasets (Fashion-MNIST, CIFAR, Tiny ImageNet, mock) are loaded into memory:
``{"image": uint8 [N, H, W, C], "label": int32 [N], "id": int64 [N]}`` (Fashion-MNIST straight
from its idx files when they are on the machine, in the TFDS dataset's order). ImageNet is a
``LazySplit``: records are decoded and resized when a batch asks for them. ``id`` is the stable
example key that teacher logits are joined on; ``take(split, rows)`` reads rows of either kind.
``split_train_val`` holds out a validation set from train (seeded, fixed across runs).
"""

import os
import re

import numpy as np
import tensorflow_datasets as tfds

from robust_distill.data import fashion_mnist, tiny_imagenet
from robust_distill.data.augment import resize_center_crop, rrc_flip_each

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "tiny_imagenet", "imagenet2012", "mock")
# name -> (tfds name, image shape, classes). ``mock`` takes the geometry of ``data.mock_like``.
INFO = {
  "fashion_mnist": ("fashion_mnist_idx", (28, 28, 1), 10),
  "cifar10": ("cifar10", (32, 32, 3), 10),
  "cifar100": ("cifar100", (32, 32, 3), 100),
  "tiny_imagenet": ("tiny_imagenet_manual", (64, 64, 3), 200),
  "imagenet2012": ("imagenet2012", (224, 224, 3), 1000),
  "mock": (None, (28, 28, 1), 10),
}
# Datasets read record by record instead of loaded into memory.
LAZY = ("imagenet2012",)


def geometry(name: str, mock_like: str = "") -> tuple[tuple[int, int, int], int]:
  """``(image shape, classes)`` of a dataset; ``mock`` has those of ``mock_like`` if given."""
  check_name(name)
  if name == "mock" and mock_like:
    check_name(mock_like)
    name = mock_like
  return INFO[name][1], INFO[name][2]


def check_name(name: str) -> None:
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; valid datasets: {list(DATASETS)}")


def default_data_dir() -> str:
  return os.environ.get("ROBUST_DISTILL_DATA", os.path.expanduser("~/tensorflow_datasets"))


def prepare(name: str, *, data_dir: str | None = None, manual_dir: str = "") -> None:
  """Builds the array_record files of ``name`` if they are not there yet (idempotent): our own
  TensorFlow-free builders (Fashion-MNIST from idx files, Tiny ImageNet from its zip)."""
  check_name(name)
  if name not in ("fashion_mnist", "tiny_imagenet"):
    return
  if name == "fashion_mnist":
    cls = fashion_mnist.FashionMnistIdx
  else:
    cls = tiny_imagenet.TinyImagenetManual
  b = cls(data_dir=data_dir or default_data_dir(), file_format="array_record")
  config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  b.download_and_prepare(download_config=config)


def _int_id(raw, position: int) -> int:
  if isinstance(raw, (bytes, str)):
    s = raw.decode() if isinstance(raw, bytes) else raw
    m = re.search(r"(\d+)$", s)
    return int(m.group(1)) if m else position
  return int(raw)


def mock_split(
  split: str, *, n: int | None = None, shape=(28, 28, 1), num_classes: int = 10, seed: int = 0
) -> dict[str, np.ndarray]:
  """A small synthetic, learnable split: class-dependent blobs plus noise (tests and smoke)."""
  n = n or (512 if split == "train" else 256)
  rng = np.random.default_rng(seed + (0 if split == "train" else 1))
  labels = rng.integers(0, num_classes, n)
  h, w, c = shape
  if num_classes * h * w * c <= 10_000_000:
    protos = np.random.default_rng(1234).uniform(0, 1, (num_classes,) + tuple(shape))
  else:  # e.g. ImageNet-shaped: 8x8 prototypes scaled up, to keep memory small
    low = np.random.default_rng(1234).uniform(0, 1, (num_classes, 8, 8, c)).astype(np.float32)
    protos = low.repeat(-(-h // 8), 1).repeat(-(-w // 8), 2)[:, :h, :w]
  images = 0.7 * protos[labels] + 0.3 * rng.uniform(0, 1, (n,) + tuple(shape))
  return {
    "image": (images * 255).astype(np.uint8),
    "label": labels.astype(np.int32),
    "id": np.arange(n, dtype=np.int64),
  }


class LazySplit:
  """A split read record by record from a random-access source (ImageNet scale).

  ``take(rows)`` decodes the records, keeps their labels and uses their position in the split
  as ``id``; images become ``size x size``: resize + center crop by default, or a random-resized
  crop (+ flip) with ``augment='rrc_flip'`` and one seed per row. ``subset(rows)`` is a view.
  """

  def __init__(self, source, size: int, rows: np.ndarray | None = None):
    self.source, self.size = source, size
    self.rows = np.arange(len(source)) if rows is None else np.asarray(rows)

  def __len__(self) -> int:
    return len(self.rows)

  def subset(self, rows) -> "LazySplit":
    return LazySplit(self.source, self.size, self.rows[np.asarray(rows)])

  def take(self, rows, *, augment: str = "none", seeds=None) -> dict[str, np.ndarray]:
    if augment not in ("none", "rrc_flip"):
      raise ValueError(
        f"augment {augment!r} is not available for a lazily read split; valid: ['none', 'rrc_flip']"
      )
    rows = np.asarray(rows)
    recs = [self.source[int(r)] for r in self.rows[rows]]
    raw = [np.asarray(r["image"], np.uint8) for r in recs]
    raw = [im[..., None] if im.ndim == 2 else im for im in raw]
    if augment == "rrc_flip":
      images, flips = rrc_flip_each(raw, seeds, self.size)
    else:
      images, flips = np.stack([resize_center_crop(im, self.size) for im in raw]), None
    return {
      "image": images,
      "label": np.asarray([int(r["label"]) for r in recs], np.int32),
      "id": self.rows[rows].astype(np.int64),
      "flip": np.zeros(len(rows), bool) if flips is None else flips,
    }


def split_size(data) -> int:
  """Number of examples of an in-memory split (dict of arrays) or a ``LazySplit``."""
  return len(data) if isinstance(data, LazySplit) else len(data["label"])


def take(data, rows) -> dict[str, np.ndarray]:
  """Rows of a split (in memory or lazy), without augmentation: image, label, id."""
  if isinstance(data, LazySplit):
    out = data.take(rows)
    out.pop("flip")
    return out
  rows = np.asarray(rows)
  return {"image": data["image"][rows], "label": data["label"][rows], "id": data["id"][rows]}


def subset(data, rows):
  """The rows ``rows`` of a split, as a split of the same kind."""
  if isinstance(data, LazySplit):
    return data.subset(rows)
  return {k: v[rows] for k, v in data.items()}


def load_split(
  name: str,
  split: str,
  *,
  data_dir: str | None = None,
  manual_dir: str = "",
  mock_examples: int = 0,
  mock_like: str = "",
):
  """Loads a split: in memory as numpy arrays, or a ``LazySplit`` for ImageNet (prepares our
  own TFDS builders first if needed). ``mock`` is synthetic, shaped like ``mock_like``."""
  check_name(name)
  if name == "mock":
    shape, classes = geometry(name, mock_like)
    return mock_split(split, n=mock_examples or None, shape=shape, num_classes=classes)
  if name == "fashion_mnist":
    fast = fashion_mnist.load_arrays(split, manual_dir)
    if fast is not None:  # the same arrays as the TFDS path below, without building it
      return fast
  data_dir = data_dir or default_data_dir()
  tfds_name = INFO[name][0]
  prepare(name, data_dir=data_dir, manual_dir=manual_dir)
  if name == "imagenet2012" and split == "test":
    split = "validation"  # ImageNet's labelled held-out split
  dl = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  try:
    src = tfds.data_source(
      tfds_name, data_dir=data_dir, split=split, download_and_prepare_kwargs={"download_config": dl}
    )
  except Exception as e:  # TFDS raises many types for a missing dataset
    raise FileNotFoundError(
      f"Dataset {tfds_name!r} split {split!r} is not prepared in {data_dir}. TFDS catalog "
      "datasets with image features are prepared once with TensorFlow installed (pip install "
      'tensorflow; python -c "import tensorflow_datasets as tfds; '
      f"tfds.builder('{tfds_name}', data_dir='{data_dir}').download_and_prepare("
      "file_format='array_record', download_config=tfds.download.DownloadConfig("
      'manual_dir=MANUAL_DIR))"; ImageNet needs ILSVRC2012_img_{train,val}.tar in '
      f"MANUAL_DIR). Original error: {e}"
    ) from e
  if name in LAZY:
    return LazySplit(src, INFO[name][1][0])
  try:
    recs = src.__getitems__(list(range(len(src))))
  except TypeError:  # tfds.testing.mock_data's source has no batched read
    recs = [src[i] for i in range(len(src))]
  images = np.stack([np.asarray(r["image"]) for r in recs]).astype(np.uint8)
  if images.ndim == 3:
    images = images[..., None]
  labels = np.asarray([int(r["label"]) for r in recs], np.int32)
  ids = np.asarray([_int_id(r.get("id", i), i) for i, r in enumerate(recs)], np.int64)
  return {"image": images, "label": labels, "id": ids}


def split_train_val(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A seeded split of ``range(n)`` into train and held-out validation indices."""
  if not 0 <= val_size < n:
    raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[: n - val_size]), np.sort(perm[n - val_size :])
