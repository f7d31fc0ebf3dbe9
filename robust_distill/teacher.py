"""Pure-functional teacher-logit precompute: run the frozen teacher once over a split.

``precompute`` shards each global batch over the mesh (all devices of all hosts), runs the
jitted teacher forward (eval mode), and every host writes the logits of *its own* rows, with
their example ids, as one ``.npz`` chunk per batch: ``chunk_<batch>_p<host>.npz``. Nothing is
gathered on one host, so it scales to ImageNet (1.28M x 1000 logits, in chunks of one global
batch). Chunks already on disk are skipped, so a killed precompute resumes; each host marks its
end with ``done_p<host>.json`` and host 0 writes ``done.json`` once all have. With
``flip_aware`` the logits of the mirrored image are stored too (``[N, 2, C]``), so that flip
augmentation stays exact. The first ``load`` checks every chunk and streams them, one at a
time, into one file (``rows.npy``, with ``rows_ids.npy``); it returns ``(rows, ids)``, where
``rows`` (``data.logit_rows.LogitRows``) reads only the rows a batch asks for. The input pipeline
looks rows up by id, whatever their order, and no host ever holds all the logits.

Precomputed logits are only valid when the teacher's view of an example is known in advance:
with 'rrc_flip' the precompute replays every view the student will see (``view_dirs``); the
config check refuses the other random crops with a precomputed teacher (use
``teacher.source='online'``).
"""

import functools
import glob
import json
import os
import time

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from robust_distill import config as C, faults, files, parallel, workdir as workdir_lib
from robust_distill.data import pipeline
from robust_distill.data.logit_rows import LogitRows, encode_topk, write_rows
from robust_distill.metrics import fmt_time
from robust_distill.models import make_apply


ROWS, ROW_IDS = "rows.npy", "rows_ids.npy"  # the chunks joined, written by the first load


def _chunk(out_dir: str, i: int, host: int) -> str:
  return os.path.join(out_dir, f"chunk_{i:06d}_p{host:03d}.npz")


def precompute(apply, params, stats, data, out_dir: str, mesh, *, batch_size: int,
               flip_aware: bool = False, view: int | None = None, seed: int = 0, topk: int = 0,
               log=print) -> None:  # fmt: skip
  """Writes ``out_dir/chunk_*.npz`` files and ``out_dir/done.json`` (idempotent).

  ``view=None``: the teacher sees each example as it is, and its float32 logits are stored.
  ``view=v``: it sees view ``v`` of the training augmentation 'rrc_flip' (``data.views``, from
  the training ``seed``), and its logits are stored compactly (``encode_topk`` with ``topk``)."""
  done = os.path.join(out_dir, "done.json")
  if os.path.exists(done):
    log(f"[precompute] already done: {out_dir}")
    return
  os.makedirs(out_dir, exist_ok=True)
  if jax.process_index() == 0:  # the joined rows of an earlier, unfinished precompute are stale
    for name in (ROWS, ROW_IDS):
      if os.path.exists(os.path.join(out_dir, name)):
        os.remove(os.path.join(out_dir, name))
  if batch_size % mesh.devices.size:
    raise ValueError(f"precompute batch {batch_size} not divisible by {mesh.devices.size} devices")
  sharded = parallel.batch_sharding(mesh)

  @functools.partial(jax.jit, out_shardings=sharded)
  def forward(params, stats, images):
    x = images.astype(jnp.float32) / 255.0
    z = apply(params, stats, x, train=False)[0]
    if flip_aware:
      z = jnp.stack([z, apply(params, stats, x[:, :, ::-1], train=False)[0]], axis=1)
    return z

  host, hosts = jax.process_index(), jax.process_count()
  n = pipeline.split_size(data)
  nb, t0, computed = -(-n // batch_size), time.perf_counter(), 0
  for i, b in enumerate(
    pipeline.eval_batches(
      data,
      batch_size=batch_size,
      host_rows=parallel.host_rows(mesh, batch_size),
      view=view,
      seed=seed,
    )  # fmt: skip
  ):
    path = _chunk(out_dir, i, host)
    if os.path.exists(path):
      continue
    z = forward(params, stats, parallel.shard_batch({"image": b["image"]}, mesh)["image"])
    z = np.asarray(multihost_utils.global_array_to_host_local_array(z, mesh, sharded.spec))
    keep = b["valid"]  # padding rows of the last batch are dropped
    tmp = path + ".tmp.npz"
    rows = z[keep].astype(np.float32) if view is None else encode_topk(z[keep], topk)
    np.savez(tmp, logits=rows, ids=b["id"][keep])
    os.replace(tmp, path)
    faults.point(f"precompute:chunk:{i}")
    computed += 1
    if computed % max(nb // 5, 1) == 0:
      el = time.perf_counter() - t0
      log(f"[precompute] {i + 1}/{nb} chunks, ETA {fmt_time(el / computed * (nb - i - 1))}")
  files.write_json(os.path.join(out_dir, f"done_p{host:03d}.json"), {"chunks": nb})
  multihost_utils.sync_global_devices("robust_distill precompute done")
  if host == 0:
    files.write_json(
      done,
      {"n": n, "chunks": nb, "hosts": hosts, "flip_aware": flip_aware, "view": view, "topk": topk},
    )
  # No host may load the logits before host 0 has marked the precompute finished.
  multihost_utils.sync_global_devices("robust_distill precompute marked done")
  log(f"[precompute] wrote teacher logits for {n} examples to {out_dir} ({hosts} host(s))")


class PrecomputeIncomplete(ValueError):
  """A finished precompute lost a chunk (unreadable, wrong shape, missing): the chunk was moved
  aside and ``done.json`` removed, so that running the precompute again recomputes it."""


def _read_chunk(path: str, classes: int | None):
  with np.load(path) as z:
    logits, ids = z["logits"], z["ids"]
  if len(logits) != len(ids):
    raise ValueError(f"{len(logits)} rows of logits for {len(ids)} ids")
  if logits.dtype.names:  # top-k rows of replayed views
    finite = np.isfinite(logits["values"]).all() and np.isfinite(logits["rest"]).all()
    index = logits["index"]
    if not finite or (classes is not None and index.size and index.max() >= classes):
      raise ValueError(f"top-k rows with non-finite values or classes >= {classes}")
    return logits, ids
  if logits.ndim not in (2, 3) or not np.isfinite(logits).all():
    raise ValueError(f"logits of shape {logits.shape}, or non-finite")
  if classes is not None and logits.shape[-1] != classes:
    raise ValueError(f"{logits.shape[-1]} classes, expected {classes}")
  return logits, ids


def load(
  out_dir: str, *, num_classes: int | None = None, log=print
) -> tuple[LogitRows, np.ndarray]:
  """Returns ``(rows, ids)`` of a finished precompute: ``rows[i]`` reads the logits of example
  ``ids[i]`` from disk (``LogitRows``); ``np.asarray(rows)`` reads them all.

  The first call checks every chunk (of every host) and streams them into ``rows.npy``. A chunk
  that cannot be read, holds the wrong number of classes or non-finite values is moved to
  ``out_dir/corrupt/`` (kept) with a one-line warning naming it, ``done.json`` is removed and
  ``PrecomputeIncomplete`` is raised: the pipeline then recomputes the missing chunks."""
  done = os.path.join(out_dir, "done.json")
  if not os.path.exists(done):
    raise FileNotFoundError(
      f"no finished teacher-logit precompute in {out_dir}; run the "
      "'precompute' stage first (--config.stages=precompute,...)"
    )
  try:
    with open(done) as f:
      n = int(json.load(f)["n"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise PrecomputeIncomplete(_set_aside(out_dir, [], f"{done} is unreadable ({e})", log)) from e
  rows_path, ids_path = os.path.join(out_dir, ROWS), os.path.join(out_dir, ROW_IDS)
  if not (os.path.exists(rows_path) and os.path.exists(ids_path)):
    _join_chunks(out_dir, n, num_classes, log)
  rows, ids = LogitRows(rows_path, classes=num_classes), np.load(ids_path)
  if len(rows) != n or len(ids) != n:
    raise ValueError(f"{rows_path} holds {len(rows)} rows for {n} examples; delete the folder")
  if num_classes is not None and not rows.dtype.names and rows.shape[-1] != num_classes:
    raise ValueError(f"{rows_path}: {rows.shape[-1]} classes, expected {num_classes}")
  return rows, ids


def _join_chunks(out_dir: str, n: int, num_classes: int | None, log) -> None:
  """Checks every chunk and (host 0) streams them into ``rows.npy`` + ``rows_ids.npy``."""
  bad, ids = [], []

  def good_chunks():
    for path in sorted(glob.glob(os.path.join(out_dir, "chunk_*.npz"))):
      try:
        logits, i = _read_chunk(path, num_classes)
      except Exception as e:  # zipfile, numpy and our own checks raise many types
        bad.append((path, f"{type(e).__name__}: {e}"))
        continue
      ids.append(i)
      yield logits

  unchecked = os.path.join(out_dir, "rows_unchecked.npy")
  if jax.process_index() == 0:
    try:
      write_rows(unchecked, good_chunks(), n=n)
    except ValueError:  # rows missing (bad or lost chunks): reported below
      pass
  else:
    for _ in good_chunks():
      pass
  if bad:
    why = "; ".join(f"{os.path.basename(p)} ({r})" for p, r in bad)
    raise PrecomputeIncomplete(_set_aside(out_dir, [p for p, _ in bad], why, log))
  ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
  if len(ids) != n or len(np.unique(ids)) != n:
    why = f"the chunks hold {len(ids)} rows ({len(np.unique(ids))} distinct ids) for {n} examples"
    if len(np.unique(ids)) < n:  # chunks are missing: recompute them
      raise PrecomputeIncomplete(_set_aside(out_dir, [], why, log))
    raise ValueError(f"{out_dir}: {why}; delete the folder and precompute again")
  if jax.process_index() == 0:
    tmp = os.path.join(out_dir, "rows_ids.tmp.npy")
    np.save(tmp, ids)
    os.replace(tmp, os.path.join(out_dir, ROW_IDS))
    os.replace(unchecked, os.path.join(out_dir, ROWS))
  multihost_utils.sync_global_devices("robust_distill logits joined")


def _set_aside(out_dir: str, paths, why: str, log) -> str:
  """Moves ``paths`` to ``out_dir/corrupt/`` and removes ``done.json`` (main process only);
  returns the one-line message."""
  if jax.process_index() == 0:
    os.makedirs(os.path.join(out_dir, "corrupt"), exist_ok=True)
    for p in paths:
      os.replace(p, os.path.join(out_dir, "corrupt", os.path.basename(p)))
    if os.path.exists(os.path.join(out_dir, "done.json")):
      os.remove(os.path.join(out_dir, "done.json"))
  multihost_utils.sync_global_devices("robust_distill precompute set aside")
  msg = (
    f"teacher logits in {out_dir} are incomplete: {why}"
    + (f"; moved to {out_dir}/corrupt/" if paths else "")
    + "; recomputing the missing chunks"
  )
  log(f"WARNING: {msg}")
  return msg


def run_stage(config, workdir: str, data: dict, mesh, logits_dir: str, *, log=print) -> None:
  """The precompute stage: the teacher's logits over the training split (idempotent); with
  random-resized crops, of every view the student will see (``view_dirs``)."""
  g, p, s, _ = workdir_lib.load_stage_model(config, "teacher", workdir, mesh, log=log)
  apply = make_apply(g, config.teacher.temperature)
  for view, out_dir in view_dirs(config, logits_dir):
    precompute(
      apply, p, s, data["train"], out_dir, mesh, batch_size=config.eval.batch_size,
      flip_aware=config.teacher.flip_aware, view=view, seed=C.train_seed(config),
      topk=config.teacher.get("topk", 0), log=log,
    )  # fmt: skip


def view_dirs(config, logits_dir: str) -> list[tuple[int | None, str]]:
  """``[(view, folder)]`` of the precompute: ``[(None, logits_dir)]``, or with replayed
  random-resized crops one ``logits_dir/view_NNNN`` per view (``config.replay_views``)."""
  n = C.replay_views(config)
  if not n:
    return [(None, logits_dir)]
  return [(v, os.path.join(logits_dir, f"view_{v:04d}")) for v in range(n)]


def load_or_recompute(config, workdir: str, data: dict, mesh, logits_dir: str, *, log=print):
  """The precomputed ``(rows, ids)`` (``load``), or ``([rows of each view], ids)`` for replayed
  views; chunks lost since the precompute are recomputed first."""
  try:
    return _load_views(config, data, logits_dir, log)
  except PrecomputeIncomplete:  # one teacher load recomputes the missing chunks of every view
    run_stage(config, workdir, data, mesh, logits_dir, log=log)
    return _load_views(config, data, logits_dir, log)


def _load_views(config, data: dict, logits_dir: str, log):
  views, ids, incomplete = [], None, None
  for view, out_dir in view_dirs(config, logits_dir):
    try:  # every view is checked (and a broken one set aside) before any recompute
      rows, v_ids = load(out_dir, num_classes=data["num_classes"], log=log)
    except PrecomputeIncomplete as e:
      incomplete = incomplete or e  # the first is raised once every view is checked
      continue
    if ids is not None and not np.array_equal(ids, v_ids):
      raise ValueError(f"{out_dir} holds other examples than view 0; delete {logits_dir}")
    views.append(rows)
    ids = v_ids
    if view is None and (rows.ndim == 3) != bool(config.teacher.flip_aware):
      have = "with" if rows.ndim == 3 else "without"
      raise ValueError(
        f"the teacher logits in {logits_dir} were precomputed {have} flips, but "
        f"teacher.flip_aware={config.teacher.flip_aware}: use another workdir, or move that "
        "folder away and rerun to precompute again"
      )
  if incomplete is not None:
    raise incomplete
  return (views if C.replay_views(config) else views[0]), ids


def for_student(config, workdir: str, data: dict, mesh, logits_dir: str, *, log=print) -> dict:
  """What the student stage needs of its teacher: ``{"graphdef", "params", "stats"}`` of an
  online teacher, or ``{"logits", "ids"}`` of a precomputed one (a list of row sets, one per
  view, for replayed views). Either way the teacher is the function it was trained as, its
  logits divided by ``teacher.temperature`` once: the precompute stores them so, and the
  online teacher's step divides them (``train.step.make_train_step``)."""
  if config.teacher.source == "online":
    g, p, s, _ = workdir_lib.load_stage_model(config, "teacher", workdir, mesh, log=log)
    return {"graphdef": g, "params": p, "stats": s}
  logits, ids = load_or_recompute(config, workdir, data, mesh, logits_dir, log=log)
  return {"logits": logits, "ids": ids}
