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

from robust_distill import faults, files as files_lib


class CheckpointCorruptError(RuntimeError):
  """A checkpoint's files do not match its manifest or cannot be read."""


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (disk full, read-only folder)."""


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

  def save(self, step: int, state, meta: dict, *, kind: str = "latest", log=print) -> bool:
    """Saves the checkpoint of ``step`` and its manifest before returning (so that a kill at
    any later instant leaves a verifiable checkpoint). A checkpoint of ``step`` already on
    disk is kept and not saved again (a resumed run reaches the same step with the same state:
    saving is idempotent). Returns whether it saved. A failed write (a full disk, a read-only
    folder) raises ``CheckpointWriteError``; the checkpoints already on disk are untouched."""
    self.finish()
    mngr = self._manager(kind)
    if step in mngr.all_steps():
      log(f"[checkpoint] the {kind} checkpoint of step {step} is already on disk: kept")
      return False
    try:
      mngr.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(to_pure(state)), meta=ocp.args.JsonSave(meta)
        ),
        force=True,
      )
      self._pending.append((kind, step))
      self.finish()
    except Exception as e:  # OSError, or orbax/tensorstore's wrapping of it
      reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
      raise CheckpointWriteError(
        f"cannot write the {kind} checkpoint of step {step} to {mngr.directory} "
        f"({type(e).__name__}: {reason}); the earlier checkpoints are intact: free space or "
        "fix the folder's permissions, then rerun the same command"
      ) from e
    return True

  def finish(self) -> None:
    """Waits for pending saves and writes their manifests (only the main process writes)."""
    if not self._pending:
      return
    self.latest.wait_until_finished()
    self.best.wait_until_finished()
    stage = os.path.basename(self.dir)
    for kind, step in self._pending:
      faults.point(f"{stage}:save:{kind}:{step}:committed")
    if jax.process_index() == 0:
      for kind, step in self._pending:
        d = os.path.join(self._manager(kind).directory, str(step))
        if os.path.isdir(d):
          files = {rel: [os.path.getsize(p), _crc(p)] for rel, p in _files(d).items()}
          files_lib.write_json(os.path.join(self.manifests, f"{kind}-{step}.json"), files)
    if jax.process_count() > 1:  # no host may read a manifest before host 0 has written it
      multihost_utils.sync_global_devices("robust_distill checkpoint manifests")
    for kind, step in self._pending:
      faults.point(f"{stage}:save:{kind}:{step}:done")
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
    try:
      with open(mpath) as f:
        manifest = json.load(f)
      entries = [(rel, int(size), int(crc)) for rel, (size, crc) in manifest.items()]
    except (OSError, ValueError, TypeError, AttributeError) as e:
      raise CheckpointCorruptError(f"checkpoint manifest {mpath} is unreadable ({e})") from e
    for rel, size, crc in entries:
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

  def restore_latest(self, abstract_state, *, log=print):
    """Restores the newest good latest checkpoint, or returns ``(None, None)`` if there is none.

    A checkpoint that fails verification (no manifest: a kill before it was written; a file
    missing, truncated or altered; an unreadable manifest) is moved aside to
    ``STAGE/ckpt_corrupt/`` (kept, never deleted) with a one-line warning naming it, and the
    previous one is tried: a scheduler's restart resumes by the same command.
    """
    for step in reversed(self.steps()):
      try:
        return self.restore(step, abstract_state)
      except CheckpointCorruptError as e:
        dst = self._move_aside(step)
        log(f"WARNING: {e}; moved it to {dst} and resuming from the previous checkpoint")
    return None, None

  def restore_newest(self, abstract_state, *, which: str = "best", log=print):
    """``(state, meta, step, kind)`` of the newest checkpoint that verifies, ``which`` kind
    first ('best' or 'latest'), then the other kind; read-only (nothing is moved). Raises
    ``CheckpointCorruptError`` naming every unusable checkpoint if none verifies, and
    ``FileNotFoundError`` if the stage has no checkpoint."""
    errors = []
    for kind in (which, "best" if which == "latest" else "latest"):
      for step in reversed(self.steps(kind)):
        try:
          state, meta = self.restore(step, abstract_state, kind=kind)
        except CheckpointCorruptError as e:
          log(f"WARNING: {e}; trying an older checkpoint")
          errors.append(str(e))
          continue
        return state, meta, step, kind
    if errors:
      raise CheckpointCorruptError("; ".join(errors))
    raise FileNotFoundError(f"no checkpoint in {self.dir}; train the stage first")

  def _move_aside(self, step: int) -> str:
    """Moves the latest checkpoint of ``step`` (and its manifest) to ``STAGE/ckpt_corrupt``."""
    aside = os.path.join(self.dir, "ckpt_corrupt")
    dst = os.path.join(aside, str(step))
    k = 1
    while os.path.exists(dst):
      dst = os.path.join(aside, f"{step}.{k}")
      k += 1
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      shutil.move(os.path.join(self.latest.directory, str(step)), dst)
      manifest = os.path.join(self.manifests, f"latest-{step}.json")
      if os.path.exists(manifest):
        shutil.move(manifest, dst + ".manifest.json")
    if jax.process_count() > 1:  # every host sees the move before it reloads
      multihost_utils.sync_global_devices("robust_distill checkpoint moved aside")
    self.latest.reload()
    return dst

  def close(self):
    self.finish()
    self.latest.close()
    self.best.close()


def _replace(template, pure):
  state = jax.tree.map(lambda x: x, template)
  nnx.replace_by_pure_dict(state, pure)
  return state


def abstract(tree, sharding):
  """ShapeDtypeStructs of ``tree`` placed with ``sharding`` (the restore target): one sharding
  for every array, or a pytree of them shaped like ``tree`` (``parallel.state_sharding``)."""
  if isinstance(sharding, jax.sharding.Sharding):
    sharding = jax.tree.map(lambda _: sharding, tree)
  return jax.tree.map(
    lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), tree, sharding
  )
