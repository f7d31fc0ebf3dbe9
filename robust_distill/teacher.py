"""Pure-functional teacher-logit precompute: run the frozen teacher once over a split.

``precompute`` shards each global batch over the mesh, runs the jitted teacher forward (eval
mode), and writes one ``.npz`` chunk per batch holding the logits and the example ids. Chunks
already on disk are skipped, so a killed precompute resumes. With ``flip_aware`` the logits of
the mirrored image are stored too (``[N, 2, C]``), so that flip augmentation stays exact.
``load`` joins the chunks into ``(logits, ids)``; the input pipeline looks rows up by id.

Precomputed logits are only valid when the teacher's view of an example is deterministic: the
config check refuses random crops with a precomputed teacher (use ``teacher.source='online'``).
"""

import functools
import glob
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from robust_distill import parallel
from robust_distill.data import pipeline
from robust_distill.metrics import fmt_time


def precompute(apply, params, stats, data: dict, out_dir: str, mesh, *, batch_size: int,
               flip_aware: bool = False, log=print) -> None:
  """Writes ``out_dir/chunk_XXXXXX.npz`` files and ``out_dir/done.json`` (idempotent)."""
  done = os.path.join(out_dir, "done.json")
  if os.path.exists(done):
    log(f"[precompute] already done: {out_dir}")
    return
  os.makedirs(out_dir, exist_ok=True)
  if batch_size % mesh.devices.size:
    raise ValueError(f"precompute batch {batch_size} not divisible by {mesh.devices.size} devices")

  repl = parallel.replicated(mesh)

  @functools.partial(jax.jit, out_shardings=repl)
  def forward(params, stats, images):
    x = images.astype(jnp.float32) / 255.0
    z = apply(params, stats, x, train=False)[0]
    if flip_aware:
      z = jnp.stack([z, apply(params, stats, x[:, :, ::-1], train=False)[0]], axis=1)
    return z

  n = len(data["label"])
  nb, t0, computed = -(-n // batch_size), time.perf_counter(), 0
  batches = pipeline.eval_batches(data, batch_size=batch_size,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
  for i, b in enumerate(batches):
    path = os.path.join(out_dir, f"chunk_{i:06d}.npz")
    if os.path.exists(path):
      continue
    z = forward(params, stats, parallel.shard_batch({"image": b["image"]}, mesh)["image"])
    if jax.process_index() == 0:
      ids = data["id"][i * batch_size:(i + 1) * batch_size]  # padding sits at the end
      z = np.asarray(jax.device_get(z))[:len(ids)]
      tmp = path + ".tmp.npz"
      np.savez(tmp, logits=z.astype(np.float32), ids=ids)
      os.replace(tmp, path)
    computed += 1
    if computed % max(nb // 5, 1) == 0:
      el = time.perf_counter() - t0
      log(f"[precompute] {i + 1}/{nb} chunks, ETA {fmt_time(el / computed * (nb - i - 1))}")
  if jax.process_index() == 0:
    with open(done, "w") as f:
      json.dump({"n": n, "chunks": nb, "flip_aware": flip_aware}, f)
  log(f"[precompute] wrote teacher logits for {n} examples to {out_dir}")


def load(out_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns ``(logits, ids)`` from a finished precompute."""
  if not os.path.exists(os.path.join(out_dir, "done.json")):
    raise FileNotFoundError(f"no finished teacher-logit precompute in {out_dir}; run the "
                            "'precompute' stage first (--config.stages=precompute,...)")
  files = sorted(glob.glob(os.path.join(out_dir, "chunk_*.npz")))
  parts = [np.load(f) for f in files]
  return (np.concatenate([p["logits"] for p in parts]),
          np.concatenate([p["ids"] for p in parts]))
