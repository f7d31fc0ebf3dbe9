"""Robust evaluation used by training (validation) and by the ``eval`` stage: clean accuracy,
PGD-k with the CE loss and CW-inf (PGD on the CW margin), over a split, sharded over the mesh.

A point counts as robust under an attack only if it is classified correctly both clean and at
the attack's output (the worst case of the two). The attacks therefore run only on the points
classified correctly: ``run_eval`` first finds them with one forward pass over the split, then
attacks them alone, packed into batches (on Fashion-MNIST about a fifth of the test split is
misclassified, a fifth of the attack's cost saved). Robust numbers from PGD alone overstate
robustness; AutoAttack is the reference for reported results.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from robust_distill import attacks, parallel
from robust_distill.data import pipeline
from robust_distill.metrics import fmt_time


def make_eval_fn(
  apply,
  *,
  eps: float,
  norm: str = "linf",
  pgd_steps: int = 20,
  pgd_step_size: float = -1.0,
  cw_steps: int = 30,
  cw_step_size: float = -1.0,
  unroll: int = -1,
):
  """``fn(params, stats, batch, key) -> {"n", "clean", "pgd", "cw"}`` correct-counts (jitted),
  an ``EvalFn``: ``fn.correct(mesh)`` is its clean forward alone, per example, which
  ``run_eval`` uses to attack only the points classified correctly.

  Step sizes default to ``2.5 * eps / steps`` (Madry et al.); starts are uniform in the ball.
  """
  unroll_arg = unroll if unroll > 0 else None
  # (name, objective, steps, step size): PGD on the CE, then CW-inf on the margin.
  runs = [
    (name, objective, steps, size if size > 0 else 2.5 * eps / max(steps, 1))
    for name, objective, steps, size in (
      ("pgd", "ce", pgd_steps, pgd_step_size),
      ("cw", "cw", cw_steps, cw_step_size),
    )
  ]

  def correct(params, stats, batch):
    x = batch["image"].astype(jnp.float32) / 255.0
    return jnp.argmax(apply(params, stats, x, train=False)[0], -1) == batch["label"]

  @jax.jit
  def fn(params, stats, batch, key):
    x = batch["image"].astype(jnp.float32) / 255.0
    y, valid = batch["label"], batch["valid"]
    logits_fn = lambda xa: apply(params, stats, xa, train=False)[0]
    ok = jnp.argmax(logits_fn(x), -1) == y
    out = {"n": jnp.sum(valid), "clean": jnp.sum(ok & valid)}
    for (name, objective, steps, size), k in zip(runs, jax.random.split(key)):
      if steps > 0:
        _, robust = attacks.pgd(logits_fn, x, y, eps=eps, step_size=size, steps=steps,
                                objective=objective, norm=norm, init="uniform", rng=k,
                                unroll=unroll_arg)  # fmt: skip
        out[name] = jnp.sum(ok & valid & robust)
    return out

  return EvalFn(fn, correct, attacks=tuple(name for name, _, steps, _ in runs if steps > 0))


class EvalFn:
  """The evaluation function of ``make_eval_fn``: called, the jitted counts of one batch;
  ``correct(mesh)``, the jitted per-example clean correctness ``(params, stats, batch) -> bool
  [B]``, replicated over ``mesh`` so that every host reads all of it. ``attacks``: the names of
  the attacks that run (none: the counts are the clean forward alone)."""

  def __init__(self, counts, correct, *, attacks: tuple[str, ...]):
    self._counts, self._correct, self.attacks = counts, correct, attacks
    self._jits = {}

  def __call__(self, params, stats, batch, key):
    return self._counts(params, stats, batch, key)

  def correct(self, mesh):
    if mesh not in self._jits:
      self._jits[mesh] = jax.jit(self._correct, out_shardings=parallel.replicated(mesh))
    return self._jits[mesh]


def run_eval(
  fn,
  params,
  stats,
  data: dict,
  mesh,
  *,
  batch_size: int,
  limit: int = 0,
  seed: int = 0,
  log=None,
  label: str = "eval",
) -> dict:
  """Runs ``fn`` over ``data`` in global batches; returns accuracies in [0, 1] and counts.

  With an ``EvalFn`` that attacks, a forward pass over the split first finds the points
  classified correctly; the attacks then run on those alone, spread evenly over the fewest
  batches of at most ``batch_size`` (padded to ``parallel.pad_multiple(mesh)`` rows, one
  compiled program), batch ``i`` with key ``fold_in(key(seed), i)``. A misclassified point
  counts as not robust either way, so only the random starts differ from attacking all points.
  """
  if batch_size % mesh.devices.size:
    raise ValueError(f"eval batch size {batch_size} not divisible by {mesh.devices.size} devices")
  n_total = len(data["label"]) if limit <= 0 else min(limit, len(data["label"]))
  if not (isinstance(fn, EvalFn) and fn.attacks):
    batches = pipeline.eval_batches(
      data, batch_size=batch_size, limit=limit, host_rows=parallel.host_rows(mesh, batch_size)
    )
    totals = _count(fn, params, stats, batches, -(-n_total // batch_size), mesh, seed, log, label)
    n = max(totals.pop("n"), 1)
    return {**{f"{k}_acc": v / n for k, v in totals.items()}, "n": n}
  ok = np.zeros(n_total, bool)
  correct = fn.correct(mesh)
  rows = parallel.host_rows(mesh, batch_size)
  for i, b in enumerate(
    pipeline.eval_batches(data, batch_size=batch_size, limit=limit, host_rows=rows)
  ):
    got = np.asarray(
      jax.device_get(correct(params, stats, parallel.shard_batch(_model_input(b), mesh)))
    )
    ok[i * batch_size : (i + 1) * batch_size] = got[: min(batch_size, n_total - i * batch_size)]
  keep = np.nonzero(ok)[0]
  totals = dict.fromkeys(fn.attacks, 0)
  if len(keep):
    per, size = pipeline.balanced_batches(len(keep), batch_size, parallel.pad_multiple(mesh))
    rows = parallel.host_rows(mesh, size)
    batches = (
      {**pipeline.take(data, keep[idx[rows]]), "valid": valid[rows]}
      for idx, valid in pipeline.padded_batches(np.arange(len(keep)), per, size)
    )
    totals = _count(fn, params, stats, batches, -(-len(keep) // per), mesh, seed, log, label)
  totals.pop("n", None)
  totals["clean"] = int(ok.sum())
  n = max(n_total, 1)
  return {**{f"{k}_acc": v / n for k, v in totals.items()}, "n": n}


def _model_input(b: dict) -> dict:
  return {k: b[k] for k in ("image", "label", "valid")}


def _count(fn, params, stats, batches, nb, mesh, seed, log, label) -> dict:
  """Sums ``fn``'s counts over ``batches`` (``nb`` of them), batch ``i`` with key
  ``fold_in(key(seed), i)``; logs progress five times."""
  totals, t0 = {}, time.perf_counter()
  for i, b in enumerate(batches):
    counts = fn(
      params,
      stats,
      parallel.shard_batch(_model_input(b), mesh),
      jax.random.fold_in(jax.random.key(seed), i),
    )
    for k, v in jax.device_get(counts).items():
      totals[k] = totals.get(k, 0) + int(v)
    if log is not None and (i + 1) % max(nb // 5, 1) == 0:
      el = time.perf_counter() - t0
      log(
        f"[{label}] {i + 1}/{nb} batches, {totals['n'] / el:.0f} img/s, "
        f"ETA {fmt_time(el / (i + 1) * (nb - i - 1))}"
      )
  return totals
