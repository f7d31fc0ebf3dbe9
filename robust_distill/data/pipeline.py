"""Input pipeline: TFDS data sources -> in-memory arrays (or lazily decoded records) -> grain,
sharded per host.

* ``load_split`` reads a split through ``tfds.data_source`` (array_record, random access, no
  TensorFlow). Small datasets (Fashion-MNIST, CIFAR, Tiny ImageNet, mock) are loaded into memory:
  ``{"image": uint8 [N, H, W, C], "label": int32 [N], "id": int64 [N]}``. ImageNet is a
  ``LazySplit``: records are decoded and resized when a batch asks for them (random-resized crop
  for training, resize + center crop for evaluation). ``id`` is the stable example key that
  teacher logits are joined on; ``take(split, rows)`` reads rows of either kind.
* ``split_train_val`` holds out a validation set from train (seeded, fixed across runs).
* ``train_iterator`` is a grain ``MapDataset`` pipeline: a seeded per-epoch shuffle of the
  training indices, each host taking its own slice of every global batch, gather + augmentation
  (seeded per batch, so deterministic, and independent of the number of hosts), an optional join
  with precomputed teacher logits and an optional class-indexed pool, and a checkpointable
  iterator (``get_state`` / ``set_state``).
"""

import dataclasses
import os
import re
from typing import Any

import grain
import numpy as np

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "tiny_imagenet", "imagenet2012", "mock")
AUGMENTS = ("none", "flip", "crop_flip", "rrc_flip")
# Augmentations whose output is not a fixed function of the example (and its flip): teacher
# logits cannot be precomputed for them.
RANDOM_CROPS = ("crop_flip", "rrc_flip")

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
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if name == "fashion_mnist":
    from robust_distill.data import fashion_mnist as mod  # pylint: disable=import-outside-toplevel
    cls = mod.FashionMnistIdx
  else:
    from robust_distill.data import tiny_imagenet as mod  # pylint: disable=import-outside-toplevel
    cls = mod.TinyImagenetManual
  b = cls(data_dir=data_dir or default_data_dir(), file_format="array_record")
  config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  b.download_and_prepare(download_config=config)


def _int_id(raw, position: int) -> int:
  if isinstance(raw, (bytes, str)):
    s = raw.decode() if isinstance(raw, bytes) else raw
    m = re.search(r"(\d+)$", s)
    return int(m.group(1)) if m else position
  return int(raw)


def mock_split(split: str, *, n: int | None = None, shape=(28, 28, 1), num_classes: int = 10,
               seed: int = 0) -> dict[str, np.ndarray]:
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
  return {"image": (images * 255).astype(np.uint8), "label": labels.astype(np.int32),
          "id": np.arange(n, dtype=np.int64)}


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int, *,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """Inception-style random-resized crop of one HWC uint8 image to ``size x size`` (10 tries
  at a random area fraction in ``scale`` and log-uniform aspect ratio in ``ratio``, then a
  center crop of the clamped ratio, as torchvision does), bilinear resize."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    r = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    cw, ch = int(round(np.sqrt(area * r))), int(round(np.sqrt(area / r)))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      break
  else:
    r0 = w / h
    cw, ch = (w, int(round(w / ratio[1]))) if r0 > ratio[1] else (
        (int(round(h * ratio[0])), h) if r0 < ratio[0] else (w, h))
    top, left = (h - ch) // 2, (w - cw) // 2
  crop = image[top:top + ch, left:left + cw]
  img = Image.fromarray(crop[..., 0] if crop.shape[-1] == 1 else crop)
  out = np.asarray(img.resize((size, size), Image.BILINEAR))
  return out.reshape(size, size, image.shape[-1])


def resize_center_crop(image: np.ndarray, size: int, resize: int | None = None) -> np.ndarray:
  """Evaluation transform: shorter side to ``resize`` (default ``size * 256 / 224``), bilinear,
  then the central ``size x size`` crop."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  resize = resize or int(round(size * 256 / 224))
  h, w = image.shape[:2]
  f = resize / min(h, w)
  nh, nw = max(size, int(round(h * f))), max(size, int(round(w * f)))
  img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  out = np.asarray(img.resize((nw, nh), Image.BILINEAR)).reshape(nh, nw, image.shape[-1])
  top, left = (nh - size) // 2, (nw - size) // 2
  return out[top:top + size, left:left + size]


def rrc_flip_each(images, seeds, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Random-resized crop to ``size`` and a random horizontal flip of each image, each from its
  own seed (so that an example's augmentation does not depend on its batch-mates or hosts)."""
  out, flips = [], np.zeros(len(images), bool)
  for i, im in enumerate(images):
    rng = np.random.default_rng(seeds[i])
    im = random_resized_crop(im, rng, size)
    flips[i] = rng.random() < 0.5
    out.append(im[:, ::-1] if flips[i] else im)
  return np.stack(out), flips


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
      raise ValueError(f"augment {augment!r} is not available for a lazily read split; "
                       "valid: ['none', 'rrc_flip']")
    rows = np.asarray(rows)
    recs = [self.source[int(r)] for r in self.rows[rows]]
    raw = [np.asarray(r["image"], np.uint8) for r in recs]
    raw = [im[..., None] if im.ndim == 2 else im for im in raw]
    if augment == "rrc_flip":
      images, flips = rrc_flip_each(raw, seeds, self.size)
    else:
      images, flips = np.stack([resize_center_crop(im, self.size) for im in raw]), None
    return {"image": images, "label": np.asarray([int(r["label"]) for r in recs], np.int32),
            "id": self.rows[rows].astype(np.int64),
            "flip": np.zeros(len(rows), bool) if flips is None else flips}


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


def load_split(name: str, split: str, *, data_dir: str | None = None, manual_dir: str = "",
               mock_examples: int = 0, mock_like: str = ""):
  """Loads a split: in memory as numpy arrays, or a ``LazySplit`` for ImageNet (prepares our
  own TFDS builders first if needed). ``mock`` is synthetic, shaped like ``mock_like``."""
  check_name(name)
  if name == "mock":
    shape, classes = geometry(name, mock_like)
    return mock_split(split, n=mock_examples or None, shape=shape, num_classes=classes)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  data_dir = data_dir or default_data_dir()
  tfds_name = INFO[name][0]
  prepare(name, data_dir=data_dir, manual_dir=manual_dir)
  if name == "imagenet2012" and split == "test":
    split = "validation"  # ImageNet's labelled held-out split
  dl = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  try:
    src = tfds.data_source(tfds_name, data_dir=data_dir, split=split,
                           download_and_prepare_kwargs={"download_config": dl})
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(
        f"Dataset {tfds_name!r} split {split!r} is not prepared in {data_dir}. TFDS catalog "
        "datasets with image features are prepared once with TensorFlow installed (pip install "
        "tensorflow; python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{tfds_name}', data_dir='{data_dir}').download_and_prepare("
        "file_format='array_record', download_config=tfds.download.DownloadConfig("
        "manual_dir=MANUAL_DIR))\"; ImageNet needs ILSVRC2012_img_{train,val}.tar in "
        f"MANUAL_DIR). Original error: {e}") from e
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
  return np.sort(perm[: n - val_size]), np.sort(perm[n - val_size:])


def augment_batch(images: np.ndarray, rng: np.random.Generator, mode: str, *,
                  host: slice = slice(None), draw_n: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Random crop (zero-pad 4) and horizontal flip of a uint8 NHWC batch.

  The random draws are made for ``draw_n`` examples (default: all of ``images``) and their
  ``host`` slice is applied to ``images``: a host passes its own rows of a global batch of
  ``draw_n``, so an example's augmentation does not depend on the number of hosts.

  Returns the augmented batch and the per-example flip flags (used by the flip-aware teacher
  logits join).
  """
  n = images.shape[0]
  draw_n = n if draw_n is None else draw_n
  flips = np.zeros(n, bool)
  if mode == "none":
    return images, flips
  out = images
  if mode == "crop_flip":
    h, w = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    dy, dx = rng.integers(0, 9, draw_n)[host], rng.integers(0, 9, draw_n)[host]
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
  flips = (rng.random(draw_n) < 0.5)[host]
  out = np.where(flips[:, None, None, None], out[:, :, ::-1], out)
  return out, flips


@dataclasses.dataclass(frozen=True)
class _Gather:
  """grain transform: global-batch index array -> this host's augmented batch."""
  data: dict
  augment: str
  seed: int
  teacher_logits: Any  # None, [N_ids, C] or [N_ids, 2, C] (flip-aware), indexed by id.
  id_to_row: Any
  class_index: Any = None  # None or [C, N_c_max] rows per class (-1 padded), for the pool.
  class_counts: Any = None
  pool_size: int = 0

  def gather(self, batch_index: int, idx: np.ndarray, host: slice):
    """This host's rows of the global batch ``idx``, augmented; returns (batch, flips)."""
    rng = np.random.default_rng([self.seed, int(batch_index)])
    global_n, idx = len(idx), idx[host]
    seeds = [[self.seed, int(batch_index), int(j)] for j in range(global_n)[host]]
    if isinstance(self.data, LazySplit):
      out = self.data.take(idx, augment=self.augment, seeds=seeds)
      return out, out.pop("flip")
    if self.augment == "rrc_flip":  # e.g. synthetic data shaped like ImageNet
      images, flips = rrc_flip_each(list(self.data["image"][idx]), seeds,
                                    self.data["image"].shape[1])
      return {"image": images, "label": self.data["label"][idx], "id": self.data["id"][idx]}, flips
    images, flips = augment_batch(self.data["image"][idx], rng, self.augment, host=host,
                                  draw_n=global_n)
    return {"image": images, "label": self.data["label"][idx], "id": self.data["id"][idx]}, flips

  def pool(self, batch_index: int) -> np.ndarray:
    """``[C, K, H, W, ch]``: K uniform draws (with replacement) from each class's training
    images, augmented; the same on every host (seeded by the batch number only)."""
    rng = np.random.default_rng([self.seed, int(batch_index), 1])
    c = len(self.class_counts)
    pick = (rng.random((c, self.pool_size)) * self.class_counts[:, None]).astype(np.int64)
    rows = np.take_along_axis(self.class_index, pick, 1).reshape(-1)
    if self.augment == "rrc_flip":
      seeds = [[self.seed, int(batch_index), 1, j] for j in range(len(rows))]
      images, _ = rrc_flip_each(list(self.data["image"][rows]), seeds,
                                self.data["image"].shape[1])
    else:
      images, _ = augment_batch(self.data["image"][rows], rng, self.augment)
    return images.reshape((c, self.pool_size) + images.shape[1:])

  def __call__(self, batch_index: int, idx: np.ndarray, host: slice = slice(None)
               ) -> dict[str, np.ndarray]:
    out, flips = self.gather(batch_index, np.asarray(idx), host)
    if self.pool_size:
      out["pool_image"] = self.pool(batch_index)
    if self.teacher_logits is not None:
      rows = self.id_to_row[out["id"]]
      t = self.teacher_logits[rows]
      if t.ndim == 3:  # flip-aware: the logits of the view this host's example shows
        t = t[np.arange(t.shape[0]), flips.astype(np.int64)]
      out["teacher_logits"] = t
    return out


def train_iterator(data: dict, indices: np.ndarray, *, global_batch: int, seed: int,
                   augment: str = "none", host_rows: slice = slice(None),
                   teacher_logits: np.ndarray | None = None,
                   teacher_ids: np.ndarray | None = None, state: dict | None = None,
                   class_pool: int = 0, num_classes: int = 0):
  """An infinite, deterministic, checkpointable iterator of this host's share of each batch.

  Global batch ``b`` is made of positions ``[b*B, (b+1)*B)`` of an epoch-wise shuffled stream of
  ``indices`` (a new permutation every epoch, from ``seed``); this host takes the rows
  ``host_rows`` of it (``robust_distill.parallel.host_rows``: the rows its devices hold). The result depends only on ``seed`` and the batch number, so a restored
  iterator (``state``) continues exactly; an example's augmentation does not depend on the
  number of hosts.

  With ``class_pool=K > 0`` each batch also carries ``pool_image`` ``[num_classes, K, ...]``: K
  random training images (of ``indices``) per class, from a class-indexed pool, identical on
  every host (AGKD-BML's negatives; ``robust_distill.train.step.select_negatives``).
  """
  if augment not in AUGMENTS:
    raise ValueError(f"Unknown augment {augment!r}; valid: {list(AUGMENTS)}")
  id_to_row = None
  if teacher_logits is not None:
    ids = data.rows if isinstance(data, LazySplit) else data["id"]
    id_to_row = np.full(int(max(ids.max(), teacher_ids.max())) + 1, -1, np.int64)
    id_to_row[teacher_ids] = np.arange(len(teacher_ids))
    missing = np.setdiff1d(ids[indices], teacher_ids)
    if missing.size:
      raise ValueError(f"precomputed teacher logits miss {missing.size} training ids "
                       f"(e.g. {missing[:5].tolist()}); rerun the precompute stage")
  class_index = class_counts = None
  if class_pool and isinstance(data, LazySplit):
    raise ValueError("a class pool (AGKD-BML's bml_negative='pool') needs the labels of an "
                     "in-memory split; use bml_negative='batch' for lazily read datasets")
  if class_pool:
    labels = data["label"][indices]
    class_counts = np.bincount(labels, minlength=num_classes)
    if num_classes <= 0 or (class_counts == 0).any():
      raise ValueError(f"a class pool needs every one of the {num_classes} classes in the "
                       f"training split; counts {class_counts.tolist()}")
    class_index = np.full((num_classes, class_counts.max()), -1, np.int64)
    for c in range(num_classes):
      rows = np.asarray(indices)[labels == c]
      class_index[c, :len(rows)] = rows
  positions = (grain.MapDataset.source(np.asarray(indices)).shuffle(seed=seed).repeat(None)
               .batch(global_batch, drop_remainder=True))
  gather = _Gather(data, augment, seed, teacher_logits, id_to_row, class_index, class_counts,
                   class_pool)
  ds = positions.map_with_index(lambda i, idx: gather(i, np.asarray(idx), host_rows))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)).__iter__()
  if state is not None:
    it.set_state(state)
  return it


def eval_batches(data, *, batch_size: int, limit: int = 0, host_rows: slice = slice(None)):
  """Yields this host's rows (``host_rows``) of each global batch over a split, in order:
  ``image``, ``label``, ``id`` and ``valid``; the last global batch is padded with repeats of
  the first example, which ``valid`` marks False.
  Works on in-memory splits and on ``LazySplit`` s (each host decodes only its own rows).
  """
  n = split_size(data) if limit <= 0 else min(limit, split_size(data))
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    valid = idx < n
    idx = np.where(valid, idx, 0)
    yield {**take(data, idx[host_rows]), "valid": valid[host_rows]}
