"""The Fashion-MNIST study's report: ``results/<name>.md``, ``results/<name>.json`` and the plots
in ``results/<name>/``, rebuilt from the entry files done so far (``experiments.study``); the
statistics are ``study_stats``'s, the regime's FLOPs XLA's cost analysis of one forward pass."""

import json
import os
import sys

import numpy as np

from robust_distill import files, workdir as workdir_lib
from robust_distill.models.flops import forward_flops
from robust_distill.experiments.study_markdown import markdown
from robust_distill.experiments.study_plots import plots
from robust_distill.experiments.study_stats import (
  bootstrap_diff,
  convergence,
  mean_convergence,
  curves,
  frontier_at,
  load_entries,
  same_seeds,
  seed_points,
  summarize,
  welch,
)

# The reference step the study's budget is stated at (bench/pgd_step.py's PyTorch step, ms).
SCALE_MS = 700.0


def scaled_minutes(runs) -> tuple[float, float]:
  """``(total, unscaled)`` minutes of ``runs`` (dicts with ``minutes`` and, optionally,
  ``segments`` and ``reference``), each part scaled to a ``SCALE_MS`` reference step by the
  reference measured in its own session: a segment by the one taken when its invocation
  started, a run without segments by the one taken right after it; parts without a measured
  reference are counted as they are, and their minutes returned as ``unscaled``."""
  total = unscaled = 0.0
  for r in runs:
    parts = [(g["seconds"] / 60, g.get("reference")) for g in r.get("segments") or []] or [
      (r["minutes"], r.get("reference"))
    ]
    for m, ref in parts:
      ms = (ref or {}).get("ms")
      total += m * SCALE_MS / ms if ms else m
      unscaled += 0.0 if ms else m
  return total, unscaled


def _teacher(out: str, kind: str) -> dict | None:
  d = os.path.join(out, "teachers", kind)
  sdir = os.path.join(d, "teacher")
  if not os.path.exists(os.path.join(sdir, "done.json")):
    return None
  t = {"kind": kind, "curves": curves(sdir)}
  with open(os.path.join(sdir, "config.json")) as f:
    t["stage"] = json.load(f)["teacher"]
  for name, key in (("eval.json", "eval"), ("study_time.json", "time")):
    p = os.path.join(d, name)
    if os.path.exists(p):
      with open(p) as f:
        t[key] = json.load(f)
  if "eval" in t:
    with open(os.path.join(d, "eval_autoattack.json")) as f:
      aa = json.load(f)
    t["eval"]["autoattack_per_attack"] = aa["per_attack"]
  return t


# Baselines a distilled entry is also compared with: LTD's AWP form against AWP, the other
# baseline that perturbs the weights (AT-AWP here; the paper's base, TRADES-AWP, is not run).
EXTRA_BASELINES = {"ltd_awp": ("awp",)}
# What an ablation row is compared with when it is not the entry named after its method config:
# the logit-manipulation students against distillation from the unmanipulated logits, the
# comparison their paper makes (their shared config names no entry).
ABLATION_BASE = {"lm_shuffle": "lm_none", "lm_mean": "lm_none"}


def early_best(entry: str, run: dict, drop: float = 1.0) -> dict | None:
  """Where a run ended more than ``drop`` points of validation PGD-10 under its best (the
  checkpoint that is evaluated: the first maximum, as the training loop keeps strict gains):
  ``{entry, seed, epoch, epochs, best, final}`` (accuracies in %), else None. One figure on
  5,000 validation images has a standard error of about 0.6 points, so a smaller drop is noise."""
  val = run["curves"]["val"]
  if not val:
    return None
  i = int(np.argmax([v[2] for v in val]))
  best, final = 100 * val[i][2], 100 * val[-1][2]
  if best - final <= drop:
    return None
  return {"entry": entry, "seed": run["seed"], "epoch": val[i][0], "epochs": val[-1][0],
          "best": best, "final": final}  # fmt: skip


def analyse(plan, out: str, entries: dict) -> dict:
  """Everything the report shows, as a JSON-able dict (``entries``: ``load_entries(out)``)."""
  rows = [summarize(k, entries[k], plan.entries[k]) for k in plan.order.split(",") if k in entries]
  by = {r["entry"]: r for r in rows}
  teachers = {k: _teacher(out, k) for k in ("robust", "clean", "standard")}
  rt = teachers.get("robust")
  regime = {}
  if rt and rows:
    student = entries[rows[0]["entry"]][0]["student_model"]
    f_s = forward_flops(student["model"], student["model_kwargs"])
    f_t = forward_flops(rt["stage"]["model"], rt["stage"]["model_kwargs"])
    regime["student_mflops"], regime["teacher_mflops"] = f_s / 1e6, f_t / 1e6
    regime["flops_ratio"] = f_s / f_t
    if "eval" in rt:
      t_aa = rt["eval"]["autoattack_acc"]
      best = max(rows, key=lambda r: r["autoattack_acc"], default=None)
      regime["teacher_autoattack"] = t_aa
      if best:
        regime["best_student"] = {"entry": best["entry"], "autoattack_acc": best["autoattack_acc"]}
        regime["teacher_above_every_student"] = all(t_aa > r["autoattack_acc"] for r in rows)
  if rt:
    regime["teacher_convergence"] = convergence({"seed": 0, "curves": rt["curves"]})
  if "pgd_at" in entries:
    conv = [convergence(r) for r in entries["pgd_at"]]
    regime["pgd_at_convergence"] = conv
    mean = mean_convergence(entries["pgd_at"])
    regime["pgd_at_mean_convergence"] = mean
    regime["pgd_at_converged"] = mean is not None and mean["movement_points"] < 0.5
  # Frontier of the TRADES students (beta 1, 3, 6) in (clean, AutoAttack).
  frontier = [(by[k]["clean_acc"], by[k]["autoattack_acc"]) for k in ("trades_b1", "trades_b3",
              "trades") if k in by]  # fmt: skip
  for r in rows:
    f = frontier_at(frontier, r["clean_acc"]) if len(frontier) >= 2 else None
    r["vs_frontier"] = None if f is None else 100 * (r["autoattack_acc"] - f)

  def compare(k: str, ref: str) -> tuple:
    """Entry ``k`` against ``ref`` on AutoAttack, on the first points both evaluated:
    ``(n, k's points, ref's points, paired bootstrap, Welch's t over the seeds)``."""
    n = min(by[k]["autoattack_n"], by[ref]["autoattack_n"])
    a, b = seed_points(entries[k], n), seed_points(entries[ref], n)
    seeds = welch([e["autoattack_acc"] for e in entries[k]],
                  [e["autoattack_acc"] for e in entries[ref]])  # fmt: skip
    return n, a, b, bootstrap_diff(a, b), seeds

  # Distilled students against PGD-AT and TRADES (AutoAttack, paired over points).
  stats = []
  for r in rows:
    if r["group"] not in ("distilled", "ablation", "logit"):
      continue
    for ref in ("pgd_at", "trades") + EXTRA_BASELINES.get(r["entry"], ()):
      if ref in entries:
        _, _, _, diff, seeds = compare(r["entry"], ref)
        stats.append({"entry": r["entry"], "against": ref, "points": diff, "seeds": seeds})
  # Ablations against their full method (the entry named after the ablation's method config, or
  # ABLATION_BASE's) on the same (first) points; across seeds too where both have several.
  ablation = []
  for r in rows:
    p = ABLATION_BASE.get(r["entry"], plan.entries[r["entry"]].config)
    if r["group"] in ("ablation", "logit") and p in entries and p != r["entry"]:
      n, a, b, diff, seeds = compare(r["entry"], p)
      x = {"entry": r["entry"], "full": p, "n": n, "aa": 100 * a.mean(), "full_aa": 100 * b.mean(),
           "diff": diff, "same_seed": None, "seeds": seeds}  # fmt: skip
      mine, theirs = same_seeds(entries[r["entry"]], entries[p])
      if mine and len(theirs) < len(entries[p]):  # the full method has other seeds as well
        a, b = seed_points(mine, n), seed_points(theirs, n)
        x["same_seed"] = {"seeds": [t["seed"] for t in theirs], "full_aa": float(100 * b.mean()),
                          "diff": bootstrap_diff(a, b)}  # fmt: skip
      ablation.append(x)
  refs = [
    s["reference"] for r in rows for s in r["per_seed"] if (s.get("reference") or {}).get("ms")
  ]
  # The budget at a SCALE_MS reference step: the machine's speed drifts up to 2x between the
  # sessions a study spans, so each session's part is scaled by its own reference.
  timed = [s for r in rows for s in r["per_seed"]] + [
    {"minutes": t["time"]["seconds"] / 60, **t["time"]}
    for t in teachers.values()
    if t and "time" in t
  ]
  minutes = sum(x["minutes"] for x in timed)
  scaled, unscaled = scaled_minutes(timed)
  planned = sum(e.seeds for e in plan.entries.values())
  early = [x for k in by for x in (early_best(k, e) for e in entries[k]) if x]
  return {
    "rows": rows,
    "teachers": {k: v for k, v in teachers.items() if v},
    "regime": regime,
    "frontier": frontier,
    "stats": stats,
    "ablation": ablation,
    "early_best": early,
    "minutes": minutes,
    "minutes_scaled": scaled,
    "scaled_to_ms": SCALE_MS,
    "minutes_unscaled": unscaled,
    "reference_ms_median": float(np.median([x["ms"] for x in refs])) if refs else None,
    "reference_other_cores_max": max((x["other_cores"] for x in refs), default=None),
    "runs_done": sum(r["seeds_done"] for r in rows),
    "runs_planned": planned,
  }


def write(plan, out_dir: str, name: str) -> dict:
  """Rebuilds ``out_dir/<name>.md``, ``.json`` and the plots; returns the analysis."""
  out = os.path.join(out_dir, name)
  os.makedirs(out, exist_ok=True)
  entries = load_entries(out)
  a = analyse(plan, out, entries)
  refs = a["reference_ms_median"]
  first = next(iter(entries.values()), [{}])[0]
  meta = {
    "command": " ".join(["python -m robust_distill.experiments.study"] + sys.argv[1:]),
    "git_commit": workdir_lib.git_commit(),
    "machine": f"{os.cpu_count()} CPU cores",
    "reference": (
      f"{refs:.0f} ms (other processes used at most {a['reference_other_cores_max']:.2f} cores "
      "while it was measured)"
      if refs
      else "not measured"
    ),
    "student": (
      f"{first['student_model']['model']} {first['student_model']['model_kwargs']}, "
      f"{first['student_epochs']:g} epochs, {first['student_attack_steps']}-step training attacks "
      "(the method's own objective)"
      if first
      else "-"
    ),
    "autoattack_n": plan.eval.autoattack_n,
    "ablation_autoattack_n": plan.eval.ablation_autoattack_n,
    "eval_n": "all" if plan.eval.n < 0 else plan.eval.n,
    "eps": first.get("eps", "-"),
  }
  meta["plots"] = plots(a, entries, out)
  meta["logit_study"] = os.path.exists(os.path.join(out, "logits", "report.md"))
  files.write_json(os.path.join(out_dir, f"{name}.json"), {"meta": meta, **a})
  files.write_text(os.path.join(out_dir, f"{name}.md"), markdown(a, meta, name))
  return a
