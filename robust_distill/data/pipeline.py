"""Input pipeline: TFDS data sources -> in-memory arrays -> grain, sharded per host.

* ``load_split`` reads a split through ``tfds.data_source`` (array_record, random access, no
  TensorFlow) into memory: ``{"image": uint8 [N, H, W, C], "label": int32 [N], "id": int64 [N]}``.
  ``id`` is the stable example key that teacher logits are joined on.
* ``split_train_val`` holds out a validation set from train (seeded, fixed across runs).
* ``train_iterator`` is a grain ``MapDataset`` pipeline: a seeded per-epoch shuffle of the
  training indices, each host taking its own slice of every global batch, vectorised gather +
  augmentation (seeded per batch, so deterministic), an optional join with precomputed teacher
  logits, and a checkpointable iterator (``get_state`` / ``set_state``).
"""

import dataclasses
import os
import re
from typing import Any

import grain
import numpy as np

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "mock")
AUGMENTS = ("none", "flip", "crop_flip")

# name -> (tfds name, image shape, classes)
INFO = {
    "fashion_mnist": ("fashion_mnist_idx", (28, 28, 1), 10),
    "cifar10": ("cifar10", (32, 32, 3), 10),
    "cifar100": ("cifar100", (32, 32, 3), 100),
    "mock": (None, (28, 28, 1), 10),
}


def check_name(name: str) -> None:
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; valid datasets: {list(DATASETS)}")


def default_data_dir() -> str:
  return os.environ.get("ROBUST_DISTILL_DATA", os.path.expanduser("~/tensorflow_datasets"))


def prepare(name: str, *, data_dir: str | None = None, manual_dir: str = "") -> None:
  """Builds the array_record files of ``name`` if they are not there yet (idempotent)."""
  check_name(name)
  if name == "fashion_mnist":
    from robust_distill.data import fashion_mnist  # pylint: disable=import-outside-toplevel
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    b = fashion_mnist.FashionMnistIdx(data_dir=data_dir or default_data_dir(),
                                      file_format="array_record")
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
  protos = np.random.default_rng(1234).uniform(0, 1, (num_classes,) + tuple(shape))
  images = 0.7 * protos[labels] + 0.3 * rng.uniform(0, 1, (n,) + tuple(shape))
  return {"image": (images * 255).astype(np.uint8), "label": labels.astype(np.int32),
          "id": np.arange(n, dtype=np.int64)}


def load_split(name: str, split: str, *, data_dir: str | None = None, manual_dir: str = "",
               mock_examples: int = 0) -> dict[str, np.ndarray]:
  """Loads a whole split into memory as numpy arrays (prepares the dataset first if needed)."""
  check_name(name)
  if name == "mock":
    return mock_split(split, n=mock_examples or None)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  data_dir = data_dir or default_data_dir()
  tfds_name = INFO[name][0]
  if name == "fashion_mnist":
    prepare(name, data_dir=data_dir, manual_dir=manual_dir)
  try:
    src = tfds.data_source(tfds_name, data_dir=data_dir, split=split)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(
        f"Dataset {tfds_name!r} split {split!r} is not prepared in {data_dir}. CIFAR datasets "
        "are prepared once with TensorFlow installed (pip install tensorflow; python -c "
        f"\"import tensorflow_datasets as tfds; tfds.builder('{tfds_name}', "
        f"data_dir='{data_dir}').download_and_prepare(file_format='array_record')\"). "
        f"Original error: {e}") from e
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

  def pool(self, batch_index: int) -> np.ndarray:
    """``[C, K, H, W, ch]``: K uniform draws (with replacement) from each class's training
    images, augmented; the same on every host (seeded by the batch number only)."""
    rng = np.random.default_rng([self.seed, int(batch_index), 1])
    c = len(self.class_counts)
    pick = (rng.random((c, self.pool_size)) * self.class_counts[:, None]).astype(np.int64)
    rows = np.take_along_axis(self.class_index, pick, 1).reshape(-1)
    images, _ = augment_batch(self.data["image"][rows], rng, self.augment)
    return images.reshape((c, self.pool_size) + images.shape[1:])

  def __call__(self, batch_index: int, idx: np.ndarray, host: slice = slice(None)
               ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, int(batch_index)])
    idx = np.asarray(idx)
    global_n, idx = len(idx), idx[host]
    images, flips = augment_batch(self.data["image"][idx], rng, self.augment, host=host,
                                  draw_n=global_n)
    out = {"image": images, "label": self.data["label"][idx], "id": self.data["id"][idx]}
    if self.pool_size:
      out["pool_image"] = self.pool(batch_index)
    if self.teacher_logits is not None:
      rows = self.id_to_row[out["id"]]
      t = self.teacher_logits[rows]
      if t.ndim == 3:
        t = t[np.arange(len(idx)), flips.astype(np.int64)]
      out["teacher_logits"] = t
    return out


def train_iterator(data: dict, indices: np.ndarray, *, global_batch: int, seed: int,
                   augment: str = "none", process_index: int = 0, process_count: int = 1,
                   teacher_logits: np.ndarray | None = None,
                   teacher_ids: np.ndarray | None = None, state: dict | None = None,
                   class_pool: int = 0, num_classes: int = 0):
  """An infinite, deterministic, checkpointable iterator of this host's share of each batch.

  Global batch ``b`` is made of positions ``[b*B, (b+1)*B)`` of an epoch-wise shuffled stream of
  ``indices`` (a new permutation every epoch, from ``seed``); host ``p`` of ``P`` takes every
  ``P``-th of them. The result depends only on ``seed`` and the batch number, so a restored
  iterator (``state``) continues exactly; an example's augmentation does not depend on the
  number of hosts.

  With ``class_pool=K > 0`` each batch also carries ``pool_image`` ``[num_classes, K, ...]``: K
  random training images (of ``indices``) per class, from a class-indexed pool, identical on
  every host (AGKD-BML's negatives; ``robust_distill.train.step.select_negatives``).
  """
  if augment not in AUGMENTS:
    raise ValueError(f"Unknown augment {augment!r}; valid: {list(AUGMENTS)}")
  if global_batch % process_count:
    raise ValueError(f"global batch {global_batch} not divisible by {process_count} processes")
  id_to_row = None
  if teacher_logits is not None:
    id_to_row = np.full(int(max(data["id"].max(), teacher_ids.max())) + 1, -1, np.int64)
    id_to_row[teacher_ids] = np.arange(len(teacher_ids))
    missing = np.setdiff1d(data["id"][indices], teacher_ids)
    if missing.size:
      raise ValueError(f"precomputed teacher logits miss {missing.size} training ids "
                       f"(e.g. {missing[:5].tolist()}); rerun the precompute stage")
  class_index = class_counts = None
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
  host = slice(process_index, None, process_count)
  ds = positions.map_with_index(lambda i, idx: gather(i, np.asarray(idx), host))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)).__iter__()
  if state is not None:
    it.set_state(state)
  return it


def eval_batches(data: dict, *, batch_size: int, limit: int = 0, process_index: int = 0,
                 process_count: int = 1):
  """Yields ``(host_batch, n_valid)`` over a split in order, padding the last global batch.

  Padded rows repeat the first example and are excluded by the ``valid`` mask in each batch.
  """
  n = len(data["label"]) if limit <= 0 else min(limit, len(data["label"]))
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    valid = idx < n
    idx = np.where(valid, idx, 0)
    sl = slice(process_index, None, process_count)
    yield {"image": data["image"][idx][sl], "label": data["label"][idx][sl],
           "id": data["id"][idx][sl], "valid": valid[sl]}
