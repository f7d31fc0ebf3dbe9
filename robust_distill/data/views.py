"""Replayable training views: the random-resized crop + flip of an example is a function of
(seed, view, example id), so that the teacher-logit precompute can show the teacher exactly the
views the student will train on (FKD-style replay)."""

import numpy as np

from robust_distill.data.augment import rrc_flip_each
from robust_distill.data.sources import LazySplit


def view_seeds(seed: int, views, ids) -> list[list[int]]:
  """The seeds of the random-resized crops of examples ``ids`` in views ``views``: one
  function of (seed, view, id), shared by the training pipeline and the replaying precompute."""
  return [[int(seed), int(v), int(i)] for v, i in zip(np.broadcast_to(views, len(ids)), ids)]


def view_batch(data, idx: np.ndarray, *, seed: int, view: int) -> dict[str, np.ndarray]:
  """Rows ``idx`` of a split as view ``view`` of the training augmentation 'rrc_flip' shows
  them (image, label, id): what the student sees of them in that view."""
  if isinstance(data, LazySplit):
    out = data.take(idx, augment="rrc_flip", seeds=view_seeds(seed, view, data.rows[idx]))
    out.pop("flip")
    return out
  ids = data["id"][idx]
  images, _ = rrc_flip_each(list(data["image"][idx]), view_seeds(seed, view, ids),
                            data["image"].shape[1])  # fmt: skip
  return {"image": images, "label": data["label"][idx], "id": ids}
