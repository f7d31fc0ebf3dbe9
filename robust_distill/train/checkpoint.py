"""Checkpoints with orbax ``CheckpointManager``: latest (for resuming) and best (by validation
robust accuracy), with an integrity manifest so that a truncated or corrupted checkpoint is
reported by file name instead of half-restored.

Layout of a stage directory ``STAGE``::

  STAGE/ckpt/<step>/{state,meta}/...   latest checkpoints (``keep`` of them)
  STAGE/ckpt_best/<step>/...           the best checkpoint so far
  STAGE/manifests/<kind>-<step>.json   file sizes and CRC32 of each checkpoint, written after it
                                       is committed

``state`` is a pure-dict pytree ``{params, stats, opt, step}`` (stable across flax Variable
changes); ``meta`` is JSON: the config, the data iterator state, the epoch and the metrics.
Restores always pass an abstract target carrying the current mesh's sharding, so a checkpoint
saved on 8 devices restores on 1 (and vice versa).
"""

import json
import os
import shutil
import zlib

from flax import nnx
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from robust_distill import files as files_lib


class CheckpointCorruptError(RuntimeError):
  """A checkpoint's files do not match its manifest or cannot be read."""


def _crc(path):
  c = 0
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      c = zlib.crc32(chunk, c)
  return c


def _files(d):
  out = {}
  for root, _, files in os.walk(d):
    for f in files:
      p = os.path.join(root, f)
      out[os.path.relpath(p, d)] = p
  return out


def to_pure(state):
  """``params``/``stats`` as plain nested dicts (stable on disk); the rest unchanged."""
  return {k: (nnx.to_pure_dict(v) if isinstance(v, nnx.State) else v) for k, v in state.items()}


class Checkpointer:
  """Latest + best checkpoints of one training stage."""

  def __init__(self, stage_dir: str, *, keep: int = 2):
    self.dir = os.path.abspath(stage_dir)
    self.manifests = os.path.join(self.dir, "manifests")
    os.makedirs(self.manifests, exist_ok=True)
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self.latest = ocp.CheckpointManager(
      os.path.join(self.dir, "ckpt"), options=opts, item_names=("state", "meta")
    )
    best_opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    self.best = ocp.CheckpointManager(
      os.path.join(self.dir, "ckpt_best"), options=best_opts, item_names=("state", "meta")
    )
    self._pending = []

  def _manager(self, kind):
    return self.latest if kind == "latest" else self.best

  def save(self, step: int, state, meta: dict, *, kind: str = "latest") -> None:
    """Saves asynchronously; the manifest is written once the save has committed."""
    self.finish()
    mngr = self._manager(kind)
    mngr.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(to_pure(state)), meta=ocp.args.JsonSave(meta)
      ),
      force=True,
    )
    self._pending.append((kind, step))

  def finish(self) -> None:
    """Waits for pending saves and writes their manifests (only the main process writes)."""
    if not self._pending:
      return
    self.latest.wait_until_finished()
    self.best.wait_until_finished()
    if jax.process_index() == 0:
      for kind, step in self._pending:
        d = os.path.join(self._manager(kind).directory, str(step))
        if os.path.isdir(d):
          files = {rel: [os.path.getsize(p), _crc(p)] for rel, p in _files(d).items()}
          files_lib.write_json(os.path.join(self.manifests, f"{kind}-{step}.json"), files)
    if jax.process_count() > 1:  # no host may read a manifest before host 0 has written it
      multihost_utils.sync_global_devices("robust_distill checkpoint manifests")
    self._pending = []

  def steps(self, kind: str = "latest") -> list[int]:
    return sorted(self._manager(kind).all_steps())

  def verify(self, step: int, kind: str = "latest") -> None:
    """Raises CheckpointCorruptError naming the first file that is missing or altered."""
    d = os.path.join(self._manager(kind).directory, str(step))
    mpath = os.path.join(self.manifests, f"{kind}-{step}.json")
    if not os.path.exists(mpath):
      raise CheckpointCorruptError(
        f"checkpoint {d} has no manifest {mpath}: its save did not finish"
      )
    with open(mpath) as f:
      manifest = json.load(f)
    for rel, (size, crc) in manifest.items():
      p = os.path.join(d, rel)
      if not os.path.exists(p):
        raise CheckpointCorruptError(f"checkpoint file missing: {p}")
      if os.path.getsize(p) != size:
        raise CheckpointCorruptError(
          f"checkpoint file truncated or altered: {p} has "
          f"{os.path.getsize(p)} bytes, expected {size}"
        )
      if _crc(p) != crc:
        raise CheckpointCorruptError(f"checkpoint file corrupted (CRC mismatch): {p}")

  def restore(self, step: int, abstract_state, *, kind: str = "latest"):
    """Restores ``(state, meta)`` at ``step`` into the shardings of ``abstract_state``."""
    self.verify(step, kind)
    target = to_pure(abstract_state)
    try:
      r = self._manager(kind).restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
        ),
      )
    except Exception as e:  # orbax raises many types for unreadable files
      raise CheckpointCorruptError(
        f"cannot read checkpoint {self._manager(kind).directory}/{step}: {type(e).__name__}: {e}"
      ) from e
    state = dict(abstract_state)
    for k in ("params", "stats"):
      state[k] = _replace(abstract_state[k], r.state[k])
    state["opt"] = r.state["opt"]
    state["step"] = r.state["step"]
    return state, r.meta

  def restore_meta(self, step: int, kind: str = "latest") -> dict:
    return (
      self._manager(kind).restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    )

  def restore_latest(self, abstract_state, *, skip_corrupt: bool = False, log=print):
    """Restores the newest good checkpoint, or returns ``(None, None)`` if there is none.

    A corrupt newest checkpoint raises ``CheckpointCorruptError`` naming the file, unless
    ``skip_corrupt``: then it is moved aside to ``STAGE/ckpt_corrupt/<step>`` (kept, not
    deleted) and the previous good checkpoint is restored.
    """
    for step in reversed(self.steps()):
      try:
        return self.restore(step, abstract_state)
      except CheckpointCorruptError as e:
        if not skip_corrupt:
          raise CheckpointCorruptError(
            f"{e}\nThe latest checkpoint (step {step}) is unusable. To resume from the "
            "previous good checkpoint instead, rerun with "
            "--config.checkpoint.skip_corrupt=True (the corrupt one is then moved to "
            f"{self.dir}/ckpt_corrupt/, not deleted)."
          ) from e
        log(
          f"WARNING: {e}; moving it to {self.dir}/ckpt_corrupt/{step} and trying the previous "
          "checkpoint"
        )
        if jax.process_index() == 0:
          os.makedirs(os.path.join(self.dir, "ckpt_corrupt"), exist_ok=True)
          shutil.move(
            os.path.join(self.latest.directory, str(step)),
            os.path.join(self.dir, "ckpt_corrupt", str(step)),
          )
        self.latest.reload()
    return None, None

  def close(self):
    self.finish()
    self.latest.close()
    self.best.close()


def _replace(template, pure):
  state = jax.tree.map(lambda x: x, template)
  nnx.replace_by_pure_dict(state, pure)
  return state


def abstract(tree, sharding):
  """ShapeDtypeStructs of ``tree`` placed with ``sharding`` (the restore target)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
