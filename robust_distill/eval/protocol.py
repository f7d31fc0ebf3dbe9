"""The resumable, sharded attack loop of an AutoAttack evaluation: the surviving points packed
into equal padded batches (one size, so one compiled program, per attack), per-point state saved
after every batch."""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from robust_distill import faults, parallel
from robust_distill.attacks import autoattack as aa, threat
from robust_distill.data import pipeline
from robust_distill.metrics import fmt_time


class Stopped(Exception):
  """Raised by ``stop_after_batches`` (a simulated interruption)."""


def _new_state(n: int, n_att: int) -> dict:
  return {
    "clean": np.full(n, -1, np.int8),
    "broken_by": np.full(n, -1, np.int8),
    "seen": np.zeros((n_att, n), bool),
    "seconds": np.zeros(n_att + 1),
    "max_dist": np.zeros(()),
    "recheck_fail": np.zeros((), np.int64),
    "min_val": np.ones(()),
    "max_val": np.zeros(()),
  }


def _load_state(path: str, n: int, n_att: int, log) -> dict | None:
  """The saved per-point state, or None (with a one-line warning, the file moved aside to
  ``<path>.corrupt``) when it cannot be read or does not fit these settings."""
  try:
    with np.load(path) as z:
      st = {k: z[k] for k in z.files}
    want = _new_state(n, n_att)
    if set(st) != set(want) or any(st[k].shape != want[k].shape for k in want):
      raise ValueError("its arrays do not match this evaluation's points and attacks")
    return st
  except Exception as e:  # zipfile, numpy and the check above raise many types
    if jax.process_index() == 0:
      os.replace(path, path + ".corrupt")
    log(
      f"WARNING: AutoAttack state {path} is unreadable ({type(e).__name__}: {e}); moved to "
      f"{path}.corrupt, starting this evaluation over"
    )
    return None


def _save_state(path, state):
  tmp = path + ".tmp.npz"
  np.savez(tmp, **state)
  os.replace(tmp, path)


class Runner:
  """The attack programs of one evaluation (model, threat model, options, mesh): ``phase(name)``
  compiles once per phase the function ``(params, stats, batch, key) -> per-point results``."""

  def __init__(self, apply, *, eps: float, norm: str, opts: dict, mesh):
    self.apply, self.eps, self.norm, self.o, self.mesh = apply, eps, norm, opts, mesh
    self.repl = parallel.replicated(mesh)
    self.host = opts["driver"] == "host" or (
      opts["driver"] == "auto" and jax.default_backend() == "cpu"
    )
    self._fns = {}
    self._host_runner = None

  def host_runner(self) -> aa.HostRunner:
    """The host-driven attack loops of this evaluation, one instance for every phase and the
    honesty checks, so that they share compiled programs."""
    if self._host_runner is None:
      self._host_runner = aa.HostRunner(
        lambda v, z: self.apply(v[0], v[1], z, train=False)[0],
        eps=self.eps,
        norm=self.norm,
        **self.o,
      )
    return self._host_runner

  def logits_fn(self, params, stats):
    """The eval-mode logits function of the model at fixed variables."""
    return lambda x: self.apply(params, stats, x, train=False)[0]

  def finish(self, lf, x, y, active, xa, r, idx):
    """Re-checks the returned points with the same forward (AutoAttack's final check); a point
    counts as broken only if the re-check agrees (conservative)."""
    still = jnp.argmax(lf(xa), -1) == y
    broken = active & ~r
    dist = jnp.where(broken, threat.flat_norm(xa - x, self.norm), 0.0)
    return {
      "idx": idx,
      "valid": active,
      "robust": active & (r | still),
      "recheck_fail": jnp.sum(broken & still),
      "max_dist": jnp.max(dist),
      "min_val": jnp.min(jnp.where(broken[:, None, None, None], xa, 1.0)),
      "max_val": jnp.max(jnp.where(broken[:, None, None, None], xa, 0.0)),
    }

  def phase(self, name):
    if name not in self._fns:
      self._fns[name] = self._make(name)
    return self._fns[name]

  def _clean(self, p, s, batch, key):
    del key
    x = batch["image"].astype(jnp.float32) / 255.0
    ok = jnp.argmax(self.logits_fn(p, s)(x), -1) == batch["label"]
    return {"idx": batch["idx"], "valid": batch["valid"], "robust": ok & batch["valid"]}

  def _make(self, name):
    if name == "clean":
      return jax.jit(self._clean, out_shardings=self.repl)
    if self.host:
      runner = self.host_runner()
      to_float = jax.jit(lambda im: im.astype(jnp.float32) / 255.0)
      fin = jax.jit(lambda p, s, *a: self.finish(self.logits_fn(p, s), *a), out_shardings=self.repl)

      def host_fn(p, s, batch, key):
        x = to_float(batch["image"])
        xa, r = runner.run(name, (p, s), x, batch["label"], batch["valid"], key)
        return fin(p, s, x, batch["label"], batch["valid"], xa, r, batch["idx"])

      return host_fn

    def fn(p, s, batch, key):
      x = batch["image"].astype(jnp.float32) / 255.0
      y, active = batch["label"], batch["valid"]
      lf = self.logits_fn(p, s)
      xa, r = aa.attack_batch(
        name, lf, x, y, active, eps=self.eps, norm=self.norm, rng=key, **self.o
      )
      return self.finish(lf, x, y, active, xa, r, batch["idx"])

    return jax.jit(fn, out_shardings=self.repl)


def _record(st, k, name, res):
  """Folds one batch's results into the per-point state."""
  vmask = res["valid"]  # padding rows (which repeat a real index) are dropped
  ridx, rob = res["idx"][vmask], res["robust"][vmask]
  if name == "clean":
    st["clean"][ridx] = rob.astype(np.int8)
    return
  st["recheck_fail"] = st["recheck_fail"] + int(res["recheck_fail"])
  st["seen"][k - 1][ridx] = True
  st["broken_by"][ridx[~rob]] = k
  st["max_dist"] = np.maximum(st["max_dist"], res["max_dist"])
  st["min_val"] = np.minimum(st["min_val"], res["min_val"])
  st["max_val"] = np.maximum(st["max_val"], res["max_val"])


def run_protocol(
  runner: Runner,
  params,
  stats,
  images,
  labels,
  *,
  names,
  batch_size: int,
  seed: int,
  state_path: str,
  settings: dict | None = None,
  fresh: bool = False,
  stop_after_batches: int = 0,
  log=print,
) -> dict:
  """The attack loop over in-memory test points (uint8 NHWC ``images``, int ``labels``),
  sharded over the runner's mesh and resumable from ``state_path`` (unless ``fresh``).

  Returns the state: ``clean`` (int8, 1 = correct), ``broken_by`` (int8, -1 none, k = the k-th
  attack of ``names``, 1-based), ``seen``, ``seconds`` (per phase: clean, then each attack),
  ``max_dist``, ``min_val``, ``max_val``, ``recheck_fail``.
  """
  mesh, n = runner.mesh, len(labels)
  st = None
  if not fresh and os.path.exists(state_path):
    st = _load_state(state_path, n, len(names), log)
    if st is not None:
      log(f"[autoattack] resuming from {state_path}")
  if st is None:
    st = _new_state(n, len(names))
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    if settings is not None:
      with open(state_path[:-4] + ".json", "w") as f:
        json.dump(settings, f, indent=1)
  done_batches = 0
  for k, name in enumerate(["clean"] + list(names)):
    if name == "clean":
      points, todo = np.arange(n), st["clean"] < 0
    else:
      # The points robust when attack k started: clean, and not broken by an earlier attack.
      alive = (st["clean"] == 1) & ((st["broken_by"] < 0) | (st["broken_by"] == k))
      points, todo = np.nonzero(alive)[0], ~st["seen"][k - 1]
    # Each phase spreads its points evenly over the fewest batches of at most batch_size,
    # padded only up to a multiple of the device count (``parallel.pad_multiple``): an attack's
    # survivors are often far fewer than a batch (65 points run as 66 rows on 2 devices, not
    # 72). The composition of the batches depends only on the saved per-point state and the
    # settings, and padding changes no real row's random draws, so a resumed run, or one on
    # another number of devices, attacks each point alike.
    per, size = pipeline.balanced_batches(len(points), batch_size, parallel.pad_multiple(mesh))
    rows = parallel.host_rows(mesh, size)
    nb = -(-len(points) // per)
    pending = [
      (b, idx, v)
      for b, (idx, v) in enumerate(pipeline.padded_batches(points, per, size))
      if todo[idx[v]].any()
    ]
    if not pending:
      continue
    fn = runner.phase(name)
    t_att = time.perf_counter()
    log(
      f"[autoattack] {name}: {len(points)} points in {nb} batch(es) of {per} (padded to {size}) "
      f"({len(pending)} to do) on {mesh.devices.size} device(s)"
    )
    for j, (b, idx, valid) in enumerate(pending):
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), k), b)
      t0 = time.perf_counter()
      local = {
        "image": images[idx][rows],
        "label": labels[idx][rows],
        "valid": valid[rows],
        "idx": idx[rows].astype(np.int32),
      }
      res = jax.device_get(fn(params, stats, parallel.shard_batch(local, mesh), key))
      _record(st, k, name, res)
      st["seconds"][k] += time.perf_counter() - t0
      if jax.process_index() == 0:
        _save_state(state_path, st)
      done_batches += 1
      faults.point(f"autoattack:batch:{done_batches}")
      el = time.perf_counter() - t_att
      robust_now = int(((st["clean"] == 1) & (st["broken_by"] < 0)).sum())
      log(
        f"[autoattack] {name} batch {j + 1}/{len(pending)}: robust so far "
        f"{robust_now}/{n}, {fmt_time(el)} elapsed, ETA for {name} "
        f"{fmt_time(el / (j + 1) * (len(pending) - j - 1))}"
      )
      if stop_after_batches and done_batches >= stop_after_batches:
        raise Stopped(f"stopped after {done_batches} batches; rerun to resume")
  return st
