"""Teacher-logit precompute: sharded, keyed by id, resumable, flip-aware."""

import os

import jax.numpy as jnp
import numpy as np

from robust_distill import parallel, teacher
from robust_distill.data import pipeline


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
  np.testing.assert_allclose(logits, want, rtol=1e-5)
  np.testing.assert_array_equal(ids, data["id"])
  # Simulate a kill after the first chunk: remove the marker and a later chunk, rerun.
  os.remove(os.path.join(out, "done.json"))
  os.remove(os.path.join(out, "chunk_000002_p000.npz"))
  first = os.path.getmtime(os.path.join(out, "chunk_000000_p000.npz"))
  teacher.precompute(_apply, jnp.float32(2.0), None, data, out, mesh, batch_size=16)
  assert os.path.getmtime(os.path.join(out, "chunk_000000_p000.npz")) == first  # not recomputed
  np.testing.assert_allclose(teacher.load(out)[0], want, rtol=1e-5)


def test_flip_aware_precompute_stores_both_views(tmp_path):
  data = pipeline.mock_split("train", n=16)
  out = str(tmp_path / "logits")
  teacher.precompute(
    _apply, jnp.float32(1.0), None, data, out, parallel.make_mesh(), batch_size=16, flip_aware=True
  )
  logits, _ = teacher.load(out)
  assert logits.shape == (16, 2, 2)
  x = data["image"].astype(np.float32) / 255
  np.testing.assert_allclose(logits[:, 1, 1], x[:, 0, -1, 0], rtol=1e-5)  # mirrored corner


def test_load_without_precompute_explains(tmp_path):
  try:
    teacher.load(str(tmp_path))
  except FileNotFoundError as e:
    assert "precompute" in str(e)
  else:
    raise AssertionError("expected FileNotFoundError")
