"""Teacher-logit precompute: sharded, keyed by id, resumable, flip-aware, read row by row."""

import os
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import parallel, teacher
from robust_distill.data import pipeline
from robust_distill.data.logit_rows import LogitRows


def _apply(params, stats, x, *, train):
  del stats, train
  return jnp.stack([x.mean(axis=(1, 2, 3)), x[:, 0, 0, 0]], -1) * params, None


def test_precompute_resumes_and_joins_by_id(tmp_path):
  data = pipeline.mock_split("train", n=40)
  data["id"] = data["id"] * 7 + 3
  out = str(tmp_path / "logits")
  mesh = parallel.make_mesh()
  teacher.precompute(_apply, jnp.float32(2.0), None, data, out, mesh, batch_size=16)
  logits, ids = teacher.load(out)
  x = data["image"].astype(np.float32) / 255
  want = np.stack([x.mean(axis=(1, 2, 3)), x[:, 0, 0, 0]], -1) * 2
  np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5)
  np.testing.assert_array_equal(ids, data["id"])
  # The chunks are joined into one file, read row by row (no rows asked: none read).
  assert isinstance(logits, LogitRows) and os.path.exists(os.path.join(out, teacher.ROWS))
  np.testing.assert_allclose(logits[[5, 1, 5]], want[[5, 1, 5]], rtol=1e-5)
  assert logits[np.zeros(0, np.int64)].shape == (0, 2)
  rows = pickle.loads(pickle.dumps(logits))  # for worker processes: reopens the file
  np.testing.assert_allclose(rows[[7]], want[[7]], rtol=1e-5)
  with pytest.raises(IndexError, match="outside"):
    logits[[40]]
  # Simulate a kill after the first chunk: remove the marker and a later chunk, rerun.
  os.remove(os.path.join(out, "done.json"))
  os.remove(os.path.join(out, "chunk_000002_p000.npz"))
  first = os.path.getmtime(os.path.join(out, "chunk_000000_p000.npz"))
  teacher.precompute(_apply, jnp.float32(2.0), None, data, out, mesh, batch_size=16)
  assert not os.path.exists(os.path.join(out, teacher.ROWS))  # the stale join is gone
  assert os.path.getmtime(os.path.join(out, "chunk_000000_p000.npz")) == first  # not recomputed
  np.testing.assert_allclose(np.asarray(teacher.load(out)[0]), want, rtol=1e-5)


def test_flip_aware_precompute_stores_both_views(tmp_path):
  data = pipeline.mock_split("train", n=16)
  out = str(tmp_path / "logits")
  teacher.precompute(
    _apply, jnp.float32(1.0), None, data, out, parallel.make_mesh(), batch_size=16, flip_aware=True
  )
  logits, _ = teacher.load(out)
  assert logits.shape == (16, 2, 2) and logits.ndim == 3
  x = data["image"].astype(np.float32) / 255
  np.testing.assert_allclose(np.asarray(logits)[:, 1, 1], x[:, 0, -1, 0], rtol=1e-5)  # mirrored
  np.testing.assert_allclose(logits[[3, 0]][:, 1, 1], x[[3, 0], 0, -1, 0], rtol=1e-5)


def test_load_without_precompute_explains(tmp_path):
  try:
    teacher.load(str(tmp_path))
  except FileNotFoundError as e:
    assert "precompute" in str(e)
  else:
    raise AssertionError("expected FileNotFoundError")


def test_a_corrupt_chunk_is_set_aside_and_recomputed(tmp_path):
  data = pipeline.mock_split("train", n=40)
  out = str(tmp_path / "logits")
  mesh = parallel.make_mesh()
  teacher.precompute(_apply, jnp.float32(2.0), None, data, out, mesh, batch_size=16)
  with open(os.path.join(out, "chunk_000001_p000.npz"), "wb") as f:
    f.write(b"garbage")
  with pytest.raises(teacher.PrecomputeIncomplete, match="chunk_000001_p000.npz"):
    teacher.load(out, log=lambda s: None)
  assert os.path.exists(os.path.join(out, "corrupt", "chunk_000001_p000.npz"))
  assert not os.path.exists(os.path.join(out, teacher.ROWS))
  teacher.precompute(_apply, jnp.float32(2.0), None, data, out, mesh, batch_size=16)
  rows, ids = teacher.load(out)
  assert len(rows) == 40 and sorted(ids.tolist()) == sorted(data["id"].tolist())
