"""The Fashion-MNIST study's statistics, computed from its result files alone:
* per entry: mean (and standard deviation over seeds) of clean, PGD-20, CW-30 accuracy on the
  test split and of AutoAttack accuracy on the fixed subset; minutes; honesty checks;
* the regime: the teacher's AutoAttack accuracy against every student's; the FLOPs of student
  and teacher (XLA's cost analysis of one forward pass); the PGD-AT student's convergence
  (the largest change of its validation PGD accuracy over the last fifth of training: the
  evaluations after 80% of the epochs and the last one before them);
* the clean/robust frontier of the TRADES students (beta 1, 3, 6): each student's AutoAttack
  accuracy minus the frontier's at the same clean accuracy (linear between frontier points;
  none outside them);
* paired bootstrap (2,000 resamples of the evaluated points, seed 0) of the AutoAttack
  accuracy difference of each distilled student against PGD-AT and TRADES, on the points both
  were evaluated on (per-point outcomes averaged over seeds), with a 95% interval; where both
  have 3 seeds, also Welch's t interval over the seeds' AutoAttack accuracies.
"""

import glob
import json
import math
import os

import numpy as np

from robust_distill.metrics import read_jsonl

BOOT = 2000
# Student t quantiles (0.975) by degrees of freedom, for Welch's interval over seeds.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 8: 2.306, 10: 2.228}


def _t975(df: float) -> float:
  keys = sorted(_T975)
  d = max(1, min(int(math.floor(df)), keys[-1]))
  return _T975[max(k for k in keys if k <= d)]


def curves(stage_dir: str) -> dict:
  """Training and validation curves of a stage, by epoch: ``val`` (epoch, clean, PGD) and
  ``train`` (epoch, loss, clean and adversarial batch accuracy)."""
  recs = read_jsonl(os.path.join(stage_dir, "metrics.jsonl"))
  with open(os.path.join(stage_dir, "done.json")) as f:
    steps = json.load(f)["steps"]
  with open(os.path.join(stage_dir, "config.json")) as f:
    epochs = float(json.load(f)[os.path.basename(os.path.normpath(stage_dir))]["optim"]["epochs"])
  per_epoch = steps / epochs
  val, train = [], []
  for r in recs:
    ep = round(r["step"] / per_epoch, 3)
    if "val/pgd_acc" in r:
      val.append([ep, r["val/clean_acc"], r["val/pgd_acc"]])
    elif "loss" in r:
      train.append([ep, r["loss"], r.get("acc/clean"), r.get("acc/adv")])
  return {"epochs": epochs, "steps": steps, "val": val, "train": train}


def load_entries(out: str) -> dict:
  """``{entry: [result of seed 0, seed 1, ...]}`` of the finished entry files in ``out``."""
  res = {}
  for p in sorted(glob.glob(os.path.join(out, "entries", "*.json"))):
    with open(p) as f:
      r = json.load(f)
    res.setdefault(r["entry"], []).append(r)
  for v in res.values():
    v.sort(key=lambda r: r["seed"])
  return res


def points(r: dict, n: int | None = None) -> np.ndarray:
  s = r["autoattack_points"]
  return np.array([c == "1" for c in (s if n is None else s[:n])], np.float64)


def _mean_std(xs):
  xs = [x for x in xs if x is not None]
  if not xs:
    return None, None
  return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else None)


def summarize(name: str, runs: list, entry) -> dict:
  row = {"entry": name, "label": entry.label, "group": entry.group, "seeds_done": len(runs),
         "seeds_planned": entry.seeds, "overrides": entry.set}  # fmt: skip
  for k in ("clean_acc", "pgd_acc", "cw_acc", "autoattack_acc"):
    row[k], row[k + "_std"] = _mean_std([r.get(k) for r in runs])
  row["autoattack_n"] = runs[0]["autoattack_n"]
  row["checks_ok"] = all(r.get("autoattack_checks_ok") for r in runs)
  row["minutes"] = sum(r["minutes"] for r in runs)
  row["per_seed"] = [
    {
      k: r.get(k)
      for k in (
        "seed",
        "clean_acc",
        "pgd_acc",
        "cw_acc",
        "autoattack_acc",
        "minutes",
        "reference",
        "segments",
      )
    }  # fmt: skip
    for r in runs
  ]
  return row


def convergence(run: dict) -> dict:
  """The largest change of validation PGD accuracy over the last fifth of training, in points:
  max - min over the evaluations at epochs >= 80% of training and the last one before."""
  val = run["curves"]["val"]
  start = 0.8 * run["curves"]["epochs"]
  before = [v for v in val if v[0] < start]
  window = ([before[-1]] if before else []) + [v for v in val if v[0] >= start]
  accs = [100 * v[2] for v in window]
  return {"seed": run["seed"], "epochs": [v[0] for v in window], "val_pgd": accs,
          "movement_points": max(accs) - min(accs) if accs else None}  # fmt: skip


def mean_convergence(runs: list[dict]) -> dict | None:
  """``convergence`` of the seeds' mean validation curve (the runs' validation points averaged
  epoch by epoch; None when the seeds were validated at different epochs). One validation
  figure on 5,000 images has a binomial standard error of about 0.6 points at 73%, more than
  the 0.5-point bar, so the criterion is judged on the mean of the seeds, whose error is
  smaller by the square root of their number; each seed's own figure is reported beside it."""
  vals = [r["curves"]["val"] for r in runs]
  if not vals or any([v[0] for v in x] != [v[0] for v in vals[0]] for x in vals):
    return None
  mean = [
    [pts[0][0], float(np.mean([p[1] for p in pts])), float(np.mean([p[2] for p in pts]))]
    for pts in zip(*vals)
  ]
  c = convergence({"seed": "mean", "curves": {"val": mean, "epochs": runs[0]["curves"]["epochs"]}})
  return {**c, "seeds": [r["seed"] for r in runs]}


def bootstrap_diff(a: np.ndarray, b: np.ndarray, reps: int = BOOT, seed: int = 0) -> dict:
  """Paired bootstrap of mean(a) - mean(b) over points: estimate and 95% interval (points)."""
  n = min(len(a), len(b))
  a, b = a[:n], b[:n]
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, n, (reps, n))
  d = a[idx].mean(1) - b[idx].mean(1)
  lo, hi = np.percentile(d, [2.5, 97.5])
  return {"diff": 100 * float(a.mean() - b.mean()), "lo": 100 * float(lo), "hi": 100 * float(hi),
          "n": n}  # fmt: skip


def welch(xs, ys) -> dict | None:
  """Welch's 95% t interval of mean(xs) - mean(ys) (points), for >= 2 values each."""
  if len(xs) < 2 or len(ys) < 2:
    return None
  xs, ys = 100 * np.asarray(xs), 100 * np.asarray(ys)
  vx, vy = xs.var(ddof=1) / len(xs), ys.var(ddof=1) / len(ys)
  se = math.sqrt(vx + vy)
  df = (vx + vy) ** 2 / ((vx**2 / (len(xs) - 1)) + (vy**2 / (len(ys) - 1))) if se > 0 else 1
  d = float(xs.mean() - ys.mean())
  h = _t975(df) * se
  return {"diff": d, "lo": d - h, "hi": d + h, "df": float(df)}


def seed_points(runs: list, n: int) -> np.ndarray:
  """Per-point AutoAttack outcome on the first ``n`` points, averaged over the seeds."""
  return np.mean([points(r, n) for r in runs], 0)


def same_seeds(runs: list, others: list) -> tuple[list, list]:
  """The runs of ``runs`` and of ``others`` with the seeds both have, in seed order: an ablation
  against its full method with the same initialisation and data order."""
  common = sorted({r["seed"] for r in runs} & {r["seed"] for r in others})
  pick = lambda rs: [next(r for r in rs if r["seed"] == s) for s in common]  # noqa: E731
  return pick(runs), pick(others)


def frontier_at(frontier: list, clean: float) -> float | None:
  """The frontier's AutoAttack accuracy at ``clean`` (linear between its points; None outside)."""
  pts = sorted(frontier)
  for (c0, a0), (c1, a1) in zip(pts, pts[1:]):
    if c0 <= clean <= c1:
      return a0 if c1 == c0 else a0 + (a1 - a0) * (clean - c0) / (c1 - c0)
  return None
