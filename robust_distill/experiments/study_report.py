"""The Fashion-MNIST study's report: ``results/<name>.md``, ``results/<name>.json`` and the plots
in ``results/<name>/``, rebuilt from the entry files done so far (``experiments.study``).

What it computes, from the files alone:
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
import sys

import jax
import jax.numpy as jnp
from flax import nnx
from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend
import numpy as np

from robust_distill import files, models, workdir as workdir_lib
from robust_distill.metrics import read_jsonl

MAIN_GROUPS = ("baseline", "distilled")
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
        "reference_ms",
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


def frontier_at(frontier: list, clean: float) -> float | None:
  """The frontier's AutoAttack accuracy at ``clean`` (linear between its points; None outside)."""
  pts = sorted(frontier)
  for (c0, a0), (c1, a1) in zip(pts, pts[1:]):
    if c0 <= clean <= c1:
      return a0 if c1 == c0 else a0 + (a1 - a0) * (clean - c0) / (c1 - c0)
  return None


def model_flops(stage_cfg: dict, shape=(28, 28, 1), classes: int = 10) -> float:
  """FLOPs of one forward pass of one image (XLA's cost analysis)."""
  m = models.build_for_data(
    stage_cfg["model"], stage_cfg["model_kwargs"], num_classes=classes, image_shape=shape
  )
  m.eval()
  g, st = nnx.split(m)
  f = jax.jit(lambda st, x: nnx.merge(g, st)(x))
  ca = f.lower(st, jnp.zeros((1,) + tuple(shape))).compile().cost_analysis()
  return float((ca[0] if isinstance(ca, list) else ca)["flops"])


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


def _pct(v, std=None) -> str:
  if v is None:
    return "-"
  return f"{100 * v:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _iv(b) -> str:
  return "-" if not b else f"{b['diff']:+.2f} [{b['lo']:+.2f}, {b['hi']:+.2f}]"


def analyse(plan, out: str) -> dict:
  """Everything the report shows, as a JSON-able dict."""
  entries = load_entries(out)
  rows = [summarize(k, entries[k], plan.entries[k]) for k in plan.order.split(",") if k in entries]
  by = {r["entry"]: r for r in rows}
  teachers = {k: _teacher(out, k) for k in ("robust", "clean", "standard")}
  rt = teachers.get("robust")
  regime = {}
  if rt and rows:
    f_s = model_flops(entries[rows[0]["entry"]][0]["student_model"])
    f_t = model_flops(rt["stage"])
    regime["student_mflops"], regime["teacher_mflops"] = f_s / 1e6, f_t / 1e6
    regime["flops_ratio"] = f_s / f_t
    if "eval" in rt:
      t_aa = rt["eval"]["autoattack_acc"]
      best = max((r for r in rows), key=lambda r: r["autoattack_acc"], default=None)
      regime["teacher_autoattack"] = t_aa
      if best:
        regime["best_student"] = {"entry": best["entry"], "autoattack_acc": best["autoattack_acc"]}
        regime["teacher_above_every_student"] = all(t_aa > r["autoattack_acc"] for r in rows)
  if rt:
    regime["teacher_convergence"] = convergence({"seed": 0, "curves": rt["curves"]})
  if "pgd_at" in entries:
    conv = [convergence(r) for r in entries["pgd_at"]]
    regime["pgd_at_convergence"] = conv
    regime["pgd_at_converged"] = all(c["movement_points"] < 0.5 for c in conv)
  # Frontier of the TRADES students (beta 1, 3, 6) in (clean, AutoAttack).
  frontier = [(by[k]["clean_acc"], by[k]["autoattack_acc"]) for k in ("trades_b1", "trades_b3",
              "trades") if k in by]  # fmt: skip
  for r in rows:
    f = frontier_at(frontier, r["clean_acc"]) if len(frontier) >= 2 else None
    r["vs_frontier"] = None if f is None else 100 * (r["autoattack_acc"] - f)
  # Distilled students against PGD-AT and TRADES (AutoAttack, paired over points).
  stats = []
  for r in rows:
    if r["group"] not in ("distilled", "ablation", "logit"):
      continue
    for ref in ("pgd_at", "trades"):
      if ref not in entries:
        continue
      n = min(r["autoattack_n"], by[ref]["autoattack_n"])
      a, b = seed_points(entries[r["entry"]], n), seed_points(entries[ref], n)
      stats.append({"entry": r["entry"], "against": ref, "points": bootstrap_diff(a, b),
                    "seeds": welch([x["autoattack_acc"] for x in entries[r["entry"]]],
                                   [x["autoattack_acc"] for x in entries[ref]])})  # fmt: skip
  # Ablations against their full method on the same (first) points.
  ablation = []
  parent = {
    "ltd_tau01": "ltd_trades", "ltd_tau1": "ltd_trades", "ltd_tau_s2": "ltd_trades",
    "dgad_no_map": "dgad", "dgad_no_els": "dgad", "dgad_no_pcr": "dgad",
    "agkd_no_at": "agkd_bml", "agkd_no_bml": "agkd_bml", "rslad_batchmean": "rslad",
  }  # fmt: skip
  for r in rows:
    p = parent.get(r["entry"])
    if r["group"] == "ablation" and p in entries:
      n = min(r["autoattack_n"], by[p]["autoattack_n"])
      a, b = seed_points(entries[r["entry"]], n), seed_points(entries[p], n)
      ablation.append({"entry": r["entry"], "full": p, "n": n, "aa": 100 * a.mean(),
                       "full_aa": 100 * b.mean(), "diff": bootstrap_diff(a, b)})  # fmt: skip
  minutes = sum(r["minutes"] for r in rows) + sum(
    t["time"]["seconds"] / 60 for t in teachers.values() if t and "time" in t
  )
  refs = [s["reference_ms"] for r in rows for s in r["per_seed"] if s.get("reference_ms")]
  planned = sum(e.seeds for e in plan.entries.values())
  return {
    "rows": rows,
    "teachers": {k: v for k, v in teachers.items() if v},
    "regime": regime,
    "frontier": frontier,
    "stats": stats,
    "ablation": ablation,
    "minutes": minutes,
    "reference_ms_median": float(np.median(refs)) if refs else None,
    "runs_done": sum(r["seeds_done"] for r in rows),
    "runs_planned": planned,
  }


def plots(a: dict, entries: dict, out: str) -> list:
  """Writes the study's plots to ``out``; returns their file names."""
  names = []
  # Validation robust accuracy against the epoch (seed 0 of the main entries, and the teacher).
  fig = Figure(figsize=(8, 5))
  ax = fig.subplots()
  for r in a["rows"]:
    if r["group"] in MAIN_GROUPS:
      v = entries[r["entry"]][0]["curves"]["val"]
      ax.plot([x[0] for x in v], [100 * x[2] for x in v], marker=".", label=r["label"])
  t = a["teachers"].get("robust")
  if t:
    v = t["curves"]["val"]
    ax.plot([x[0] for x in v], [100 * x[2] for x in v], "k--", label="teacher")
  ax.set(xlabel="epoch", ylabel="validation PGD-10 accuracy (%)",
         title="Validation robust accuracy during training (seed 0)")  # fmt: skip
  if ax.lines:
    ax.legend(fontsize=7, ncol=2)
  fig.savefig(os.path.join(out, "val_robust_by_epoch.png"), dpi=100)
  names.append("val_robust_by_epoch.png")
  # AutoAttack accuracy against the teacher temperature (LTD), on the ablations' points.
  taus = [(0.1, "ltd_tau01"), (0.25, "ltd_trades"), (1.0, "ltd_tau1")]
  n = min((entries[k][0]["autoattack_n"] for _, k in taus if k in entries), default=0)
  pts = [(tau, 100 * seed_points(entries[k], n).mean()) for tau, k in taus if k in entries]
  if pts:
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
    ax.set(xscale="log", xlabel="teacher temperature tau_T",
           ylabel=f"AutoAttack accuracy (%), first {n} points", title="LTD: tau_T")  # fmt: skip
    fig.savefig(os.path.join(out, "ltd_autoattack_by_tau.png"), dpi=100)
    names.append("ltd_autoattack_by_tau.png")
  # Clean against AutoAttack accuracy, with the TRADES frontier.
  fig = Figure(figsize=(7, 5))
  ax = fig.subplots()
  fr = sorted(a["frontier"])
  if fr:
    ax.plot([100 * c for c, _ in fr], [100 * r for _, r in fr], "k-o", label="TRADES frontier")
  for r in a["rows"]:
    if r["group"] in MAIN_GROUPS:
      ax.scatter(100 * r["clean_acc"], 100 * r["autoattack_acc"], s=15)
      ax.annotate(r["label"], (100 * r["clean_acc"], 100 * r["autoattack_acc"]), fontsize=7)
  ax.set(xlabel="clean accuracy (%)", ylabel="AutoAttack accuracy (%)",
         title="Clean / robust trade-off")  # fmt: skip
  fig.savefig(os.path.join(out, "tradeoff.png"), dpi=100)
  names.append("tradeoff.png")
  return names


def markdown(a: dict, meta: dict, name: str) -> str:
  L = [
    f"# Results: {name}",
    "",
    f"Produced by `{meta['command']}` at commit `{meta['git_commit']}`. {a['runs_done']} of "
    f"{a['runs_planned']} runs done; {a['minutes']:.1f} min of training and evaluation so far "
    f"(teachers included), {meta['machine']}; median reference step (`bench/pgd_step.py`, "
    f"PyTorch, measured after each entry) {meta['reference']}.",
    "",
    f"Student: {meta['student']}. Evaluation: clean, PGD-20 and CW-30 on {meta['eval_n']} test "
    f"points; AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) at L-inf eps {meta['eps']} "
    f"on the first {meta['autoattack_n']} test points (ablation rows: the first "
    f"{meta['ablation_autoattack_n']}), with its honesty checks.",
    "",
    "## The regime",
    "",
  ]
  g = a["regime"]
  if "flops_ratio" in g:
    L.append(
      f"* FLOPs per image (forward, XLA cost analysis): student {g['student_mflops']:.2f} M, "
      f"teacher {g['teacher_mflops']:.2f} M: ratio {g['flops_ratio']:.3f} "
      f"({'at most' if g['flops_ratio'] <= 1 / 3 else 'MORE than'} a third)."
    )
  if "teacher_autoattack" in g:
    b = g.get("best_student")
    L.append(
      f"* Teacher's AutoAttack accuracy {_pct(g['teacher_autoattack'])}%"
      + (
        f"; best student {b['entry']} {_pct(b['autoattack_acc'])}%: the teacher is "
        + (
          "above every student." if g["teacher_above_every_student"] else "NOT above every student."
        )
        if b
        else "."
      )
    )
  if "teacher_convergence" in g:
    c = g["teacher_convergence"]
    L.append(
      f"* Teacher: validation PGD-10 over the last fifth of training (epochs "
      f"{', '.join(f'{e:g}' for e in c['epochs'])}): "
      f"{', '.join(f'{v:.2f}' for v in c['val_pgd'])}; moves {c['movement_points']:.2f} points."
    )
  for c in g.get("pgd_at_convergence", []):
    L.append(
      f"* PGD-AT seed {c['seed']}: validation PGD-10 over the last fifth of training (epochs "
      f"{', '.join(f'{e:g}' for e in c['epochs'])}): "
      f"{', '.join(f'{v:.2f}' for v in c['val_pgd'])}; moves {c['movement_points']:.2f} points "
      f"({'converged: < 0.5' if c['movement_points'] < 0.5 else 'NOT converged: >= 0.5'})."
    )
  L += ["", "## Teachers", ""]
  for k, t in a["teachers"].items():
    v = t["curves"]["val"][-1] if t["curves"]["val"] else None
    line = (
      f"* {k}: {t['stage']['model']} {t['stage']['model_kwargs']}, {t['curves']['epochs']:g} epochs"
    )
    if v:
      line += f"; final validation {_pct(v[1])}% clean, {_pct(v[2])}% PGD-10"
    if "eval" in t:
      e = t["eval"]
      line += (
        f"; test {_pct(e['clean_acc'])}% clean, {_pct(e['pgd_acc'])}% PGD-20, "
        f"{_pct(e['cw_acc'])}% CW-30, AutoAttack {_pct(e['autoattack_acc'])}% "
        f"(checks {'ok' if e.get('autoattack_checks_ok') else 'FLAG'})"
      )
    if "time" in t:
      line += f" ({t['time']['seconds'] / 60:.1f} min)"
    L.append(line + ".")
  L += [
    "",
    "## Students",
    "",
    "Mean ± standard deviation over seeds where there are several. 'vs frontier': AutoAttack "
    "accuracy minus the TRADES frontier's at the same clean accuracy (points; '-' outside it).",
    "",
    "| entry | seeds | clean | PGD-20 | CW-30 | AutoAttack | vs frontier | AA checks | minutes |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for group in ("baseline", "distilled", "ablation", "logit"):
    for r in (r for r in a["rows"] if r["group"] == group):
      vf = "-" if r["vs_frontier"] is None else f"{r['vs_frontier']:+.2f}"
      aa = _pct(r["autoattack_acc"], r["autoattack_acc_std"]) + (
        f" (n={r['autoattack_n']})" if r["autoattack_n"] != meta["autoattack_n"] else ""
      )
      L.append(
        f"| {r['label']} | {r['seeds_done']}/{r['seeds_planned']} | "
        f"{_pct(r['clean_acc'], r['clean_acc_std'])} | {_pct(r['pgd_acc'], r['pgd_acc_std'])} | "
        f"{_pct(r['cw_acc'], r['cw_acc_std'])} | {aa} | {vf} | "
        f"{'ok' if r['checks_ok'] else 'FLAG'} | {r['minutes']:.1f} |"
      )
  if a["stats"]:
    L += [
      "",
      "## Distilled students against the baselines (AutoAttack)",
      "",
      "Difference in points with a 95% interval: paired bootstrap over the evaluated points "
      "(per-point outcomes averaged over seeds), and Welch's t over seeds where both have them.",
      "",
      "| entry | against | points: diff [95%] | seeds: diff [95%] |",
      "|---|---|---|---|",
    ]
    lab = {r["entry"]: r["label"] for r in a["rows"]}
    for s in a["stats"]:
      L.append(
        f"| {lab[s['entry']]} | {lab[s['against']]} | {_iv(s['points'])} | {_iv(s['seeds'])} |"
      )
  if a["ablation"]:
    L += [
      "",
      "## Ablations against their full method (AutoAttack on the same points)",
      "",
      "| ablation | full method | points | ablation AA | full AA | diff [95%] |",
      "|---|---|---|---|---|---|",
    ]
    lab = {r["entry"]: r["label"] for r in a["rows"]}
    for x in a["ablation"]:
      L.append(
        f"| {lab[x['entry']]} | {lab[x['full']]} | {x['n']} | {x['aa']:.2f} | "
        f"{x['full_aa']:.2f} | {_iv(x['diff'])} |"
      )
  L += ["", "## Plots", ""] + [f"![{p}]({name}/{p})" for p in meta["plots"]]
  L += [
    "",
    "Logit-distribution study (standard vs adversarially trained teacher): "
    + (f"[{name}/logits/report.md]({name}/logits/report.md)." if meta["logit_study"]
       else "not run yet (it runs after the entries)."),
    "",
  ]  # fmt: skip
  return "\n".join(L)


def write(plan, out_dir: str, name: str) -> dict:
  """Rebuilds ``out_dir/<name>.md``, ``.json`` and the plots; returns the analysis."""
  out = os.path.join(out_dir, name)
  os.makedirs(out, exist_ok=True)
  a = analyse(plan, out)
  entries = load_entries(out)
  refs = a["reference_ms_median"]
  first = next(iter(entries.values()), [{}])[0]
  meta = {
    "command": " ".join(["python -m robust_distill.experiments.study"] + sys.argv[1:]),
    "git_commit": workdir_lib.git_commit(),
    "machine": f"{os.cpu_count()} CPU cores",
    "reference": f"{refs:.0f} ms" if refs else "not measured",
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
