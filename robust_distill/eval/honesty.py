"""Checks that a robust-accuracy number is honest (AutoAttack's own sanity checks, and the
checks for gradient masking of Carlini et al., "On Evaluating Adversarial Robustness", 2019).

Each check returns ``{"name", "ok", "value", "detail"}``; ``ok`` is False for a red flag. They
never stop an evaluation: the flags are printed beside the numbers and stored in the JSON.

* ``deterministic``: the eval-mode forward gives the same logits twice and inside a different
  batch (reversed order), as AutoAttack's randomness check (max L2 distance between
  L2-normalised logit vectors <= 1e-4, same number of correct predictions).
* ``logits_not_probabilities``: the attacked outputs are not a probability distribution.
* ``gradients``: no zero or non-finite input gradient of CE and DLR at the clean points that
  the model classifies correctly (the points an attack has to work on, as AutoAttack's
  ``check_zero_gradients`` inside APGD; at a misclassified point whose true class ranks third,
  DLR is the constant 1 and its gradient is legitimately 0).
* ``eps_monotone``: robust accuracy does not rise as eps grows (at least 3 values of eps), and
  is near 0 at the largest.
* ``more_iterations``: APGD-CE with 2x iterations and 2 restarts does not give a higher robust
  accuracy than with 1x iterations and 1 restart (tolerance: one point in 100, or 1 example).
* ``square_vs_whitebox``: the black-box Square attack breaks at most 0.2% of the points that
  survived the white-box attacks (AutoAttack's ``check_square_sr``); more means the gradients
  mislead the white-box attacks (gradient masking).
* ``attacked_is_reported``: the function attacked is the deployed function (temperature,
  normalisation and BatchNorm mode included): its logits equal those of
  ``robust_distill.restore(workdir)``'s model, and its clean accuracy equals the reported one.
* ``perturbation_bounds``: every returned point lies in the eps-ball and in [0, 1].
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from robust_distill import parallel
from robust_distill.attacks import apgd as apgd_lib
from robust_distill.losses import core, extra


def _check(name, ok, value, detail):
  return {"name": name, "ok": bool(ok), "value": value, "detail": detail}


def deterministic(logits_fn, x) -> dict:
  a = np.asarray(logits_fn(x))
  b = np.asarray(logits_fn(x))
  c = np.asarray(logits_fn(x[::-1]))[::-1]

  def nrm(v):
    return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)

  dist = float(
    max(
      np.max(np.linalg.norm(nrm(a) - nrm(b), axis=1)),
      np.max(np.linalg.norm(nrm(a) - nrm(c), axis=1)),
    )
  )
  same = (np.argmax(a, 1) == np.argmax(b, 1)).all() and (np.argmax(a, 1) == np.argmax(c, 1)).all()
  return _check(
    "deterministic",
    dist <= 1e-4 and same,
    dist,
    "max L2 distance between normalised logits over repeated calls and a reversed batch (<= 1e-4)",
  )


def logits_not_probabilities(logits_fn, x) -> dict:
  z = np.asarray(logits_fn(x))
  probs = z.max() < 1 + 1e-5 and z.min() > -1e-5 and np.allclose(z.sum(1), 1.0, atol=1e-5)
  return _check(
    "logits_not_probabilities",
    not probs,
    float(np.abs(z.sum(1) - 1).max()),
    "outputs must be logits, not a probability distribution",
  )


def gradients(logits_fn, x, y) -> dict:
  def g(loss):
    # One compiled program per loss: run eagerly, the backward pass compiles op by op.
    return jax.jit(jax.grad(lambda v, yy: jnp.sum(loss(logits_fn(v), yy))))(x, y)

  correct = np.asarray(jax.jit(lambda v, yy: jnp.argmax(logits_fn(v), -1) == yy)(x, y))
  out = {}
  for name, loss in (("ce", core.cross_entropy), ("dlr", extra.dlr)):
    gr = np.asarray(g(loss)).reshape(len(y), -1)[correct]
    out[name] = {
      "zero": int((np.abs(gr).sum(1) == 0).sum()),
      "nonfinite": int((~np.isfinite(gr)).any(1).sum()),
    }
  bad = sum(v["zero"] + v["nonfinite"] for v in out.values())
  return _check(
    "gradients",
    bad == 0,
    out,
    f"correctly classified points with zero or non-finite input gradient of CE / "
    f"DLR, of {int(correct.sum())}",
  )


def apgd_robust_fn(logits_fn, *, norm: str, unroll=None):
  """``robust_fn(x, y, eps, n_iter, seed) -> bool [B]`` (clean-correct and robust under one
  APGD-CE run), in one jitted program; the evaluator passes a host-driven one on CPU."""

  def robust_fn(x, y, eps, n_iter, seed):
    def run(xx, yy, e):
      _, ok = apgd_lib.apgd(
        logits_fn,
        xx,
        yy,
        eps=e,
        norm=norm,
        loss="ce",
        n_iter=n_iter,
        rng=jax.random.key(seed),
        unroll=unroll,
      )
      return ok & (jnp.argmax(logits_fn(xx), -1) == yy)

    return np.asarray(jax.jit(run)(x, y, eps))

  return robust_fn


def eps_monotone(
  robust_fn, x, y, *, eps, factors=(0.25, 0.5, 1.0, 2.0, 4.0), n_iter=100, seed=0
) -> dict:
  accs = {f"{f * eps:.6g}": float(np.mean(robust_fn(x, y, f * eps, n_iter, seed))) for f in factors}
  vals = list(accs.values())
  mono = all(vals[i + 1] <= vals[i] + 1e-9 for i in range(len(vals) - 1))
  return _check(
    "eps_monotone",
    mono,
    accs,
    f"APGD-CE robust accuracy on {len(y)} points at eps x {list(factors)}: must not "
    f"rise with eps (last value should be near 0)",
  )


def more_iterations(robust_fn, x, y, *, eps, n_iter=100, seed=0) -> dict:
  a = float(np.mean(robust_fn(x, y, eps, n_iter, seed)))
  # Two restarts of 2x iterations: robust only if robust under both.
  b = float(
    np.mean(robust_fn(x, y, eps, 2 * n_iter, seed + 1) & robust_fn(x, y, eps, 2 * n_iter, seed + 2))
  )
  tol = max(0.01, 1.0 / len(y))
  return _check(
    "more_iterations",
    b <= a + tol,
    {f"apgd_ce_{n_iter}x1": a, f"apgd_ce_{2 * n_iter}x2": b},
    f"robust accuracy on {len(y)} points must not rise with 2x iterations and 2 "
    f"restarts (tolerance {tol:.3f})",
  )


def square_vs_whitebox(n_total: int, broken_by_square: int, threshold: float = 0.002) -> dict:
  frac = broken_by_square / max(n_total, 1)
  return _check(
    "square_vs_whitebox",
    frac <= threshold,
    frac,
    f"fraction of all points broken by Square after the white-box attacks "
    f"(<= {threshold}); more suggests gradient masking",
  )


def attacked_is_reported(
  logits_fn, reference_fn, x, *, clean_acc=None, reported_clean=None, info=None
) -> dict:
  a = np.asarray(logits_fn(x))
  b = np.asarray(reference_fn(np.asarray(x)))  # the deployed model, on one device
  diff = float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))
  ok = diff <= 1e-4
  value = {"max_rel_logit_diff": diff, **(info or {})}
  if clean_acc is not None and reported_clean is not None:
    value.update(clean_acc=clean_acc, reported_clean_acc=reported_clean)
    ok = ok and abs(clean_acc - reported_clean) < 1e-9
  return _check(
    "attacked_is_reported",
    ok,
    value,
    "the attacked function equals the deployed model (restore(workdir)) and gives "
    "the reported clean accuracy",
  )


def perturbation_bounds(max_dist: float, eps: float, min_val: float, max_val: float) -> dict:
  ok = max_dist <= eps + 1e-5 and min_val >= 0.0 and max_val <= 1.0
  return _check(
    "perturbation_bounds",
    ok,
    {"max_dist": max_dist, "min": min_val, "max": max_val},
    "adversarial points lie in the eps-ball (float slack 1e-5) and in [0, 1]",
  )


def _host_robust_fn(runner, params, stats):
  """``robust_fn`` of the checks through the evaluation's host-driven APGD-CE (fast on CPU),
  whose compiled programs serve every radius (and the evaluation's own APGD-CE)."""
  host = runner.host_runner()

  def robust_fn(x, y, eps, n_iter, seed):
    _, r = host.run(
      "apgd-ce",
      (params, stats),
      x,
      y,
      jnp.ones(len(y), bool),
      jax.random.key(seed),
      eps=eps,
      n_iter=n_iter,
    )
    return np.asarray(r)

  return robust_fn


def _memo(robust_fn):
  """``robust_fn`` that runs each ``(eps, n_iter, seed)`` once on the checks' fixed points:
  ``more_iterations``'s 1x run is ``eps_monotone``'s run at the evaluation's eps."""
  seen = {}

  def fn(x, y, eps, n_iter, seed):
    key = (float(eps), int(n_iter), int(seed))
    if key not in seen:
      seen[key] = robust_fn(x, y, eps, n_iter, seed)
    return seen[key]

  return fn


def run_checks(
  runner,
  params,
  stats,
  test: dict,
  st: dict,
  result: dict,
  *,
  deployed,
  workdir: str,
  check_n: int,
  seed: int,
) -> dict:
  """All the checks on the first ``check_n`` evaluated points, for an AutoAttack result:
  returns ``{"checks", "checks_ok", "checks_seconds"}``. ``runner`` is the evaluation's
  ``eval.autoattack.Runner``, ``st`` its per-point state, ``deployed`` the model as
  ``robust_distill.restore`` gives it."""
  tc = time.perf_counter()
  mesh, o, eps, norm = runner.mesh, runner.o, runner.eps, runner.norm
  names, n, ndev = result["attacks"], result["n"], mesh.devices.size
  m = min(check_n, n)
  m = m // ndev * ndev if m >= ndev else m
  sharding = parallel.batch_sharding(mesh) if m % ndev == 0 else parallel.replicated(mesh)
  xs = jax.device_put(np.asarray(test["image"][:m], np.float32) / 255.0, sharding)
  ys = jax.device_put(np.asarray(test["label"][:m]), sharding)
  logits_fn = runner.logits_fn(params, stats)
  lf = jax.jit(logits_fn)
  reported = None
  ej = os.path.join(workdir, "eval.json")
  if os.path.exists(ej):
    with open(ej) as f:
      prev = json.load(f)
    if prev.get("stage") == result["stage"] and prev.get("n") == n:
      reported = prev.get("clean_acc")
  if runner.host:
    robust_fn = _memo(_host_robust_fn(runner, params, stats))
  else:
    robust_fn = _memo(apgd_robust_fn(logits_fn, norm=norm))
  cl = [
    deterministic(lf, xs),
    logits_not_probabilities(lf, xs),
    gradients(logits_fn, xs, ys),
    eps_monotone(robust_fn, xs, ys, eps=eps, n_iter=o["n_iter"], seed=seed),
    more_iterations(robust_fn, xs, ys, eps=eps, n_iter=o["n_iter"], seed=seed),
    attacked_is_reported(
      lf,
      deployed,
      xs,
      clean_acc=result["clean_acc"],
      reported_clean=reported,
      info={
        "temperature": result["temperature"],
        "batchnorm": "running averages (eval mode)",
        "normalisation": "inside the model",
      },
    ),
    perturbation_bounds(float(st["max_dist"]), eps, float(st["min_val"]), float(st["max_val"])),
  ]
  if "square" in names and names.index("square") > 0:
    broken_sq = int((st["broken_by"] == names.index("square") + 1).sum())
    cl.append(square_vs_whitebox(n, broken_sq))
  return {
    "checks": cl,
    "checks_ok": all(c["ok"] for c in cl),
    "checks_seconds": time.perf_counter() - tc,
  }
