"""Robust evaluation used by training (validation) and by the ``eval`` stage: clean accuracy,
PGD-k with the CE loss and CW-inf (PGD on the CW margin), over a split, sharded over the mesh.

A point counts as robust under an attack only if it is classified correctly both clean and at
the attack's output (the worst case of the two). Robust numbers from PGD alone overstate
robustness; AutoAttack is the reference for reported results.
"""

import time

import jax
import jax.numpy as jnp

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
  """``fn(params, stats, batch, key) -> {"n", "clean", "pgd", "cw"}`` correct-counts (jitted).

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

  return fn


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
  """Runs ``fn`` over ``data`` in global batches; returns accuracies in [0, 1] and counts."""
  if batch_size % mesh.devices.size:
    raise ValueError(f"eval batch size {batch_size} not divisible by {mesh.devices.size} devices")
  totals, t0 = {}, time.perf_counter()
  n_total = len(data["label"]) if limit <= 0 else min(limit, len(data["label"]))
  nb = -(-n_total // batch_size)
  for i, b in enumerate(
    pipeline.eval_batches(
      data, batch_size=batch_size, limit=limit, host_rows=parallel.host_rows(mesh, batch_size)
    )
  ):
    b.pop("id")
    counts = fn(
      params, stats, parallel.shard_batch(b, mesh), jax.random.fold_in(jax.random.key(seed), i)
    )
    for k, v in jax.device_get(counts).items():
      totals[k] = totals.get(k, 0) + int(v)
    if log is not None and (i + 1) % max(nb // 5, 1) == 0:
      el = time.perf_counter() - t0
      log(
        f"[{label}] {i + 1}/{nb} batches, {totals['n'] / el:.0f} img/s, "
        f"ETA {fmt_time(el / (i + 1) * (nb - i - 1))}"
      )
  n = max(totals.pop("n"), 1)
  res = {f"{k}_acc": v / n for k, v in totals.items()}
  res["n"] = n
  return res
