"""The Fashion-MNIST study's Markdown report, from ``study_report.analyse``'s summary."""


def _pct(v, std=None) -> str:
  if v is None:
    return "-"
  return f"{100 * v:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _iv(b) -> str:
  return "-" if not b else f"{b['diff']:+.2f} [{b['lo']:+.2f}, {b['hi']:+.2f}]"


def markdown(a: dict, meta: dict, name: str) -> str:
  L = [
    f"# Results: {name}",
    "",
    f"Produced by `{meta['command']}` at commit `{meta['git_commit']}`. {a['runs_done']} of "
    f"{a['runs_planned']} runs done; {a['minutes']:.1f} min of training and evaluation so far "
    f"(teachers included), {meta['machine']}; median reference step (`bench/pgd_step.py`, "
    f"PyTorch, measured after each entry) {meta['reference']}. Scaled to a "
    f"{a['scaled_to_ms']:.0f} ms reference step, each session's part by the reference measured "
    f"when that session started: {a['minutes_scaled'] / 60:.2f} h"
    + (
      f" ({a['minutes_unscaled']:.1f} min without a reference counted unscaled)."
      if a["minutes_unscaled"]
      else "."
    ),
    "",
    f"Student: {meta['student']}. Evaluation: clean, PGD-20 and CW-30 on {meta['eval_n']} test "
    f"points; AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) at L-inf eps {meta['eps']} "
    f"on the first {meta['autoattack_n']} test points (ablation and logit-manipulation rows: the "
    f"first {meta['ablation_autoattack_n']}), with its honesty checks.",
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
      f"{', '.join(f'{v:.2f}' for v in c['val_pgd'])}; moves {c['movement_points']:.2f} points."
    )
  c = g.get("pgd_at_mean_convergence")
  if c:
    ok = c["movement_points"] < 0.5
    L.append(
      f"* PGD-AT, mean of seeds {', '.join(str(s) for s in c['seeds'])} (the criterion: one "
      "validation figure has a standard error of about 0.6 points, the mean of the seeds less): "
      f"{', '.join(f'{v:.2f}' for v in c['val_pgd'])}; moves {c['movement_points']:.2f} points "
      f"({'converged: < 0.5' if ok else 'NOT converged: >= 0.5'})."
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
  lab = {r["entry"]: r["label"] for r in a["rows"]}
  if a.get("early_best"):
    L += [
      "",
      "Each run is evaluated at its best checkpoint by validation PGD-10. Runs that ended more "
      "than a point under that best (their figures are the earlier checkpoint's):",
      "",
    ] + [
      f"* {lab[x['entry']]} seed {x['seed']}: best at epoch {x['epoch']:g} of {x['epochs']:g} "
      f"({x['best']:.2f}% validation PGD-10; {x['final']:.2f}% at the end)."
      for x in a["early_best"]
    ]
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
    for s in a["stats"]:
      L.append(
        f"| {lab[s['entry']]} | {lab[s['against']]} | {_iv(s['points'])} | {_iv(s['seeds'])} |"
      )
  if a["ablation"]:
    L += [
      "",
      "## Ablations against their full method (AutoAttack on the same points)",
      "",
      "The logit-manipulation students are compared with distillation from the unmanipulated "
      "logits. 'Full AA' and its difference average each point over all of the full method's "
      "seeds; where it has more seeds than the ablation, 'same seed' compares with its run of "
      "the ablation's seed only (same initialisation and data order). Neither of those intervals "
      "includes the spread between seeds; 'seeds' (Welch's t over the seeds' accuracies, where "
      "both have several) does.",
      "",
      "| ablation | full method | points | ablation AA | full AA | diff [95%] | same seed: "
      "full AA, diff [95%] | seeds: diff [95%] |",
      "|---|---|---|---|---|---|---|---|",
    ]
    for x in a["ablation"]:
      ss = x.get("same_seed")
      same = f"{ss['full_aa']:.2f}, {_iv(ss['diff'])}" if ss else "-"
      L.append(
        f"| {lab[x['entry']]} | {lab[x['full']]} | {x['n']} | {x['aa']:.2f} | "
        f"{x['full_aa']:.2f} | {_iv(x['diff'])} | {same} | {_iv(x.get('seeds'))} |"
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
