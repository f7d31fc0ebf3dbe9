"""Input pipeline: data sources (``sources``) -> augmentation (``augment``) -> grain,
sharded per host. The names of ``sources`` and ``augment`` are re-exported here.

* ``load_split`` reads a split through ``tfds.data_source`` (array_record, random access, no
  TensorFlow). Small datasets (Fashion-MNIST, CIFAR, Tiny ImageNet, mock) are loaded into memory:
  ``{"image": uint8 [N, H, W, C], "label": int32 [N], "id": int64 [N]}`` (Fashion-MNIST straight
  from its idx files when they are on the machine, in the TFDS dataset's order). ImageNet is a
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
from typing import Any

import grain
import numpy as np

from robust_distill.data.augment import (
  AUGMENTS,
  RANDOM_CROPS,
  augment_batch,
  random_resized_crop,
  resize_center_crop,
  rrc_flip_each,
)
from robust_distill.data.sources import (
  DATASETS,
  INFO,
  LAZY,
  LazySplit,
  check_name,
  default_data_dir,
  geometry,
  load_split,
  mock_split,
  prepare,
  split_size,
  split_train_val,
  subset,
  take,
)
from robust_distill.data.views import view_batch, view_seeds
from robust_distill.data.workers import HostBatch, WorkerIterator

__all__ = [
  "AUGMENTS",
  "DATASETS",
  "INFO",
  "LAZY",
  "RANDOM_CROPS",
  "LazySplit",
  "augment_batch",
  "check_name",
  "default_data_dir",
  "eval_batches",
  "geometry",
  "load_split",
  "mock_split",
  "padded_batches",
  "prepare",
  "random_resized_crop",
  "resize_center_crop",
  "rrc_flip_each",
  "split_size",
  "split_train_val",
  "subset",
  "take",
  "train_iterator",
  "view_batch",
  "view_seeds",
]


@dataclasses.dataclass(frozen=True)
class _Gather:
  """grain transform: global-batch index array -> this host's augmented batch."""

  data: dict
  augment: str
  seed: int
  # None; [N_ids, C] or [N_ids, 2, C] (flip-aware), indexed by id; or, for replayed
  # random-resized crops, a list of such row sets, one per view.
  teacher_logits: Any
  id_to_row: Any
  class_index: Any = None  # None or [C, N_c_max] rows per class (-1 padded), for the pool.
  class_counts: Any = None
  pool_size: int = 0
  epoch_size: int = 1  # examples per epoch (the positions of the stream map to epochs)
  views: int = 0  # rrc_flip views per example, cycled over epochs (0: a new one every epoch)

  def view_of(self, batch_index: int, global_n: int, host: slice) -> np.ndarray:
    """The view (``epoch`` or ``epoch % views``) of each of this host's rows of a batch."""
    epoch = (int(batch_index) * global_n + np.arange(global_n)[host]) // self.epoch_size
    return epoch % self.views if self.views else epoch

  def gather(self, batch_index: int, idx: np.ndarray, host: slice, view: np.ndarray):
    """This host's rows of the global batch ``idx``, augmented; returns (batch, flips).
    A random-resized crop depends on (seed, ``view``, example id) only (``view_seeds``), so
    that a precompute can replay it."""
    rng = np.random.default_rng([self.seed, int(batch_index)])
    global_n, idx = len(idx), idx[host]
    seeds = None
    if self.augment == "rrc_flip":
      ids = self.data.rows[idx] if isinstance(self.data, LazySplit) else self.data["id"][idx]
      seeds = view_seeds(self.seed, view, ids)
    if isinstance(self.data, LazySplit):
      out = self.data.take(idx, augment=self.augment, seeds=seeds)
      return out, out.pop("flip")
    if self.augment == "rrc_flip":  # e.g. synthetic data shaped like ImageNet
      images, flips = rrc_flip_each(
        list(self.data["image"][idx]), seeds, self.data["image"].shape[1]
      )
      return {"image": images, "label": self.data["label"][idx], "id": self.data["id"][idx]}, flips
    images, flips = augment_batch(
      self.data["image"][idx], rng, self.augment, host=host, draw_n=global_n
    )
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
      images, _ = rrc_flip_each(list(self.data["image"][rows]), seeds, self.data["image"].shape[1])
    else:
      images, _ = augment_batch(self.data["image"][rows], rng, self.augment)
    return images.reshape((c, self.pool_size) + images.shape[1:])

  def __call__(
    self, batch_index: int, idx: np.ndarray, host: slice = slice(None)
  ) -> dict[str, np.ndarray]:
    idx = np.asarray(idx)
    replayed = self.augment == "rrc_flip" or isinstance(self.teacher_logits, list)
    view = self.view_of(batch_index, len(idx), host) if replayed else None
    out, flips = self.gather(batch_index, idx, host, view)
    if self.pool_size:
      out["pool_image"] = self.pool(batch_index)
    if isinstance(self.teacher_logits, list):  # replayed views: each row from its own view
      rows = self.id_to_row[out["id"]]
      if view.max() >= len(self.teacher_logits):
        raise ValueError(
          f"epoch {view.max()} needs teacher logits of view {view.max()}, but "
          f"{len(self.teacher_logits)} views were precomputed; precompute more (data.views)"
        )
      t = None
      for v in np.unique(view):
        part = self.teacher_logits[int(v)][rows[view == v]]
        t = np.empty((len(rows),) + part.shape[1:], part.dtype) if t is None else t
        t[view == v] = part
      out["teacher_logits"] = t
    elif self.teacher_logits is not None:
      rows = self.id_to_row[out["id"]]
      t = self.teacher_logits[rows]
      if t.ndim == 3:  # flip-aware: the logits of the view this host's example shows
        t = t[np.arange(t.shape[0]), flips.astype(np.int64)]
      out["teacher_logits"] = t
    return out


def train_iterator(
  data: dict,
  indices: np.ndarray,
  *,
  global_batch: int,
  seed: int,
  augment: str = "none",
  host_rows: slice = slice(None),
  teacher_logits: np.ndarray | None = None,
  teacher_ids: np.ndarray | None = None,
  state: dict | None = None,
  class_pool: int = 0,
  num_classes: int = 0,
  workers: int = 0,
  views: int = 0,
):
  """An infinite, deterministic, checkpointable iterator of this host's share of each batch.

  Global batch ``b`` is made of positions ``[b*B, (b+1)*B)`` of an epoch-wise shuffled stream of
  ``indices`` (a new permutation every epoch, from ``seed``); this host takes the rows
  ``host_rows`` of it (``robust_distill.parallel.host_rows``: the rows its devices hold). The
  result depends only on ``seed`` and the batch number, so a restored
  iterator (``state``) continues exactly; an example's augmentation does not depend on the
  number of hosts.

  With ``class_pool=K > 0`` each batch also carries ``pool_image`` ``[num_classes, K, ...]``: K
  random training images (of ``indices``) per class, from a class-indexed pool, identical on
  every host (AGKD-BML's negatives; ``robust_distill.train.step.select_negatives``).

  ``workers=0`` builds the batches in this process (one thread); ``workers=W > 0`` in W worker
  processes (grain's ``mp_prefetch``: decoding and augmentation in parallel). The batches and
  the state (``{"next_index": batches taken}``) are the same either way, so a run may resume
  with another worker count.

  With ``augment='rrc_flip'`` an example's crop and flip are a function of (seed, view, id),
  its view being the epoch (``views=0``) or the epoch modulo ``views``; ``teacher_logits`` may
  then be a list with the logits of each view (a replayed precompute).
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
      raise ValueError(
        f"precomputed teacher logits miss {missing.size} training ids "
        f"(e.g. {missing[:5].tolist()}); rerun the precompute stage"
      )
  class_index = class_counts = None
  if class_pool and isinstance(data, LazySplit):
    raise ValueError(
      "a class pool (AGKD-BML's bml_negative='pool') needs the labels of an "
      "in-memory split; use bml_negative='batch' for lazily read datasets"
    )
  if class_pool:
    labels = data["label"][indices]
    class_counts = np.bincount(labels, minlength=num_classes)
    if num_classes <= 0 or (class_counts == 0).any():
      raise ValueError(
        f"a class pool needs every one of the {num_classes} classes in the "
        f"training split; counts {class_counts.tolist()}"
      )
    class_index = np.full((num_classes, class_counts.max()), -1, np.int64)
    for c in range(num_classes):
      rows = np.asarray(indices)[labels == c]
      class_index[c, : len(rows)] = rows
  positions = (
    grain.MapDataset.source(np.asarray(indices))
    .shuffle(seed=seed)
    .repeat(None)
    .batch(global_batch, drop_remainder=True)
  )
  gather = _Gather(
    data, augment, seed, teacher_logits, id_to_row, class_index, class_counts, class_pool,
    epoch_size=len(indices), views=views,
  )  # fmt: skip
  ds = positions.map_with_index(HostBatch(gather, host_rows))
  if workers > 0:
    return WorkerIterator(ds, workers, (state or {}).get("next_index", 0))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)).__iter__()
  if state is not None:
    it.set_state(state)
  return it


def padded_batches(points: np.ndarray, batch_size: int, pad_to: int = 0):
  """Batches of indices over ``points``: yields ``(idx, valid)``, ``batch_size`` points each
  (fewer in the last), padded to ``pad_to`` rows (default ``batch_size``) with repeats of
  ``points[0]``, which ``valid`` marks False (one compiled program then serves every batch)."""
  pad_to = pad_to or batch_size
  if pad_to < batch_size:
    raise ValueError(f"pad_to={pad_to} < batch_size={batch_size}")
  for start in range(0, len(points), batch_size):
    idx = points[start : start + batch_size]
    valid = np.zeros(pad_to, bool)
    valid[: len(idx)] = True
    yield np.concatenate([idx, np.full(pad_to - len(idx), points[0])]), valid


def balanced_batches(count: int, cap: int, multiple: int) -> tuple[int, int]:
  """``(per_batch, padded)``: ``count`` points in the fewest batches of at most ``cap``, spread
  evenly (``per_batch = ceil(count / n_batches)``), each padded to ``padded`` rows, a multiple
  of ``multiple`` (at most ``cap``). 100 points, cap 128, multiple 8: one batch of 100 padded to
  104, not 128; 300 points, cap 256: two of 150, padded to 152."""
  if count <= 0:
    return cap, cap
  per = -(-count // -(-count // cap))
  return per, min(cap, -(-per // multiple) * multiple)


def eval_batches(
  data, *, batch_size: int, limit: int = 0, host_rows: slice = slice(None), view=None, seed=0
):
  """Yields this host's rows (``host_rows``) of each global batch over a split, in order:
  ``image``, ``label``, ``id`` and ``valid``; the last global batch is padded with repeats of
  the first example, which ``valid`` marks False. With ``view=v`` the images are view ``v`` of
  the training augmentation 'rrc_flip' (``view_batch``, training seed ``seed``).
  Works on in-memory splits and on ``LazySplit`` s (each host decodes only its own rows).
  """
  n = split_size(data) if limit <= 0 else min(limit, split_size(data))
  for idx, valid in padded_batches(np.arange(n), batch_size):
    rows = idx[host_rows]
    b = take(data, rows) if view is None else view_batch(data, rows, seed=seed, view=view)
    yield {**b, "valid": valid[host_rows]}
