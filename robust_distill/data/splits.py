"""The splits of a run's config: train minus a seeded validation hold-out, validation, test."""

import numpy as np

from robust_distill.data import pipeline


def load_split(config, split: str):
  """One split of the config's dataset (in memory, or a ``pipeline.LazySplit``)."""
  d = config.data
  return pipeline.load_split(
    config.dataset,
    split,
    data_dir=d.data_dir or None,
    manual_dir=d.manual_dir,
    mock_examples=d.mock_examples,
    mock_like=d.mock_like,
  )


def test_split(config, start: int = 0, n: int = 0) -> dict:
  """Test points ``start .. start + n`` (``n`` = 0: to the end) in memory: ``image`` (uint8
  NHWC), ``label``, ``id``."""
  test = load_split(config, "test")
  total = pipeline.split_size(test)
  if not 0 <= start < total:
    raise ValueError(f"start={start}: the test split has {total} points")
  stop = total if n <= 0 else min(start + n, total)
  return pipeline.take(test, np.arange(start, stop))


def load_data(config) -> dict:
  """Train (minus validation), validation and test splits. A synthetic (mock) train split
  smaller than ``data.val_size`` holds out a quarter of itself instead."""
  d = config.data
  train = load_split(config, "train")
  test = load_split(config, "test")
  n = pipeline.split_size(train)
  val_size = min(d.val_size, n // 4) if config.dataset == "mock" else d.val_size
  tr_idx, val_idx = pipeline.split_train_val(n, val_size, d.seed)
  shape, num_classes = pipeline.geometry(config.dataset, d.mock_like)
  return {
    "train": train,
    "train_idx": tr_idx,
    "val": pipeline.subset(train, val_idx),
    "test": test,
    "num_classes": num_classes,
    "shape": shape,
  }
