"""The results table's Markdown: one row per entry, with the budget and the comparison of the
distilled students against PGD-AT."""

# The distilled students compared with PGD-AT (PGD-20 at least PGD-AT's minus 1 point).
DISTILLED = ("rslad", "adaad", "ltd_trades", "ltd_awp", "dgad")


def _pct(v):
  return f"{100 * v:.2f}"


def _points(r, ref) -> float:
  """PGD accuracy of row ``r`` minus the reference row's, in points (2 decimals)."""
  return round(100 * (r["pgd_acc"] - ref["pgd_acc"]), 2)


def markdown(rows: list[dict], meta: dict) -> str:
  ref = next((r for r in rows if r["entry"] == "pgd_at" and "error" not in r), None)
  lines = [
    f"# Results: {meta['suite']}",
    "",
    f"Produced by `{meta['command']}` at commit `{meta['git_commit']}` "
    f"({meta['wall_time']}, {meta['machine']}).",
    "",
    f"Every student: {meta['student']}. Robust accuracy at L-inf eps = {meta['eps']}: "
    f"PGD-{meta['pgd_steps']} and CW-{meta['cw_steps']} on the first {meta['eval_n']} "
    f"test points, AutoAttack (standard) on the first {meta['autoattack_n']}, with its "
    "honesty checks (AA checks). 'vs PGD-AT' is the PGD-"
    f"{meta['pgd_steps']} accuracy minus PGD-AT's, in points; 'time' is the entry's "
    "training plus evaluation.",
    "",
  ]
  for t in meta.get("teachers", []):
    lines.append(
      f"* {t['label']}: validation {_pct(t['val_clean'])}% clean, "
      f"{_pct(t['val_pgd'])}% PGD-{t['val_pgd_steps']} ({t['minutes']:.1f} min)."
    )
  lines += [
    "",
    f"| method | clean | PGD-{meta['pgd_steps']} | vs PGD-AT | CW-{meta['cw_steps']} "
    "| AutoAttack | AA checks | time |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['label']} | not run: {r['error']} | | | | | | |")
      continue
    aa = _pct(r["autoattack_acc"]) if "autoattack_acc" in r else "-"
    ok = {True: "ok", False: "FLAGS", None: "-"}[r.get("autoattack_checks_ok")]
    vs = f"{_points(r, ref):+.2f}" if ref else "-"
    lines.append(
      f"| {r['label']} | {_pct(r['clean_acc'])} | {_pct(r['pgd_acc'])} | {vs} | "
      f"{_pct(r['cw_acc'])} | {aa} | {ok} | {r.get('minutes', 0):.1f} min |"
    )
  cmp = [
    (r["label"], _points(r, ref))
    for r in rows
    if ref and r["entry"] in DISTILLED and "error" not in r
  ]
  if cmp:
    lines += [
      "",
      f"Distilled students against PGD-AT's PGD-{meta['pgd_steps']} accuracy minus 1 "
      "point (the bar they should clear): "
      + "; ".join(f"{label} {d:+.2f} ({'clears' if d >= -1 else 'misses'})" for label, d in cmp)
      + ".",
    ]
  if meta.get("logit_study"):
    lines += [
      "",
      f"Logit-distribution study (standard vs adversarially trained model): "
      f"[{meta['logit_study']}/report.md]({meta['logit_study']}/report.md).",
    ]
  return "\n".join(lines) + "\n"


def budget(s) -> str:
  o, a = s.optim, s.attack
  return (
    f"{s.model}, {o.epochs:g} epoch(s) of batch {s.batch_size}, {a.steps}-step training "
    f"attack of step {a.step_size:g}, {o.name.upper()} lr {o.lr:g} {o.schedule}, "
    f"wd {o.weight_decay:g}"
  )
