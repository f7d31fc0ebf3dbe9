"""Reports of the evaluations: plain-text tables and the one atomic JSON writer."""

import jax

from robust_distill import files


def write_json(path: str, obj: dict) -> None:
  """Writes ``obj`` to ``path`` atomically; only the main process writes."""
  if jax.process_index() == 0:
    files.write_json(path, obj)


def table(results: dict, title: str = "") -> str:
  """The plain-text table of an ``eval.json``: clean, PGD, CW and, when run, AutoAttack."""
  rows = [
    ("clean", "clean_acc"),
    (f"PGD-{results.get('pgd_steps', '')} (CE)", "pgd_acc"),
    (f"CW-inf ({results.get('cw_steps', '')} steps)", "cw_acc"),
  ]
  lines = [title] if title else []
  lines.append(f"{'metric':<22}{'accuracy':>10}")
  lines.append("-" * 32)
  for name, key in rows:
    if key in results:
      subset = key == "cw_acc" and results.get("cw_n", results["n"]) < results["n"]
      note = f"  (first {results['cw_n']} test points)" if subset else ""
      lines.append(f"{name:<22}{100 * results[key]:>9.2f}%{note}")
  lines.append(
    f"(n = {results['n']} test points, eps = {results.get('eps')}, {results.get('norm', 'linf')})"
  )
  if "autoattack_acc" in results:
    flag = "" if results.get("autoattack_checks_ok", True) else "  [honesty checks: RED FLAGS]"
    lines.append(
      f"{'AutoAttack (' + results['autoattack_version'] + ')':<22}"
      f"{100 * results['autoattack_acc']:>9.2f}%  (first {results['autoattack_n']} "
      f"test points; clean {100 * results['autoattack_clean_acc']:.2f}% on them){flag}"
    )
  return "\n".join(lines)


def autoattack_table(r: dict) -> str:
  """Plain-text report: clean and robust accuracy, the per-attack breakdown, the checks."""
  lines = [
    f"AutoAttack ({r['version']}) on {r['n']} {r['dataset']} test points, "
    f"{r['norm']} eps={r['eps']:g}, {r['stage']} ({r['model']}, T={r['temperature']:g})",
    f"{'':<14}{'broke':>8}{'robust after':>14}{'seconds':>10}",
    f"{'clean':<14}{'':>8}{100 * r['clean_acc']:>13.2f}%{'':>10}",
  ]
  for a in r["per_attack"]:
    lines.append(
      f"{a['attack']:<14}{a['broken']:>8}{100 * a['robust_after']:>13.2f}%{a['seconds']:>10.0f}"
    )
  lines.append(
    f"robust accuracy: {100 * r['robust_acc']:.2f}%  (max perturbation {r['max_perturbation']:.4g})"
  )
  if "checks" in r:
    lines.append("honesty checks" + ("" if r["checks_ok"] else " (RED FLAGS: see below)") + ":")
    lines.append(checks_table(r["checks"]))
  return "\n".join(lines)


def checks_table(checks: list[dict]) -> str:
  """One line per honesty check: ``[ok]`` or ``[FLAG]``, its name and value."""
  lines = []
  for c in checks:
    v = c["value"]
    if isinstance(v, float):
      v = f"{v:.4g}"
    lines.append(f"  [{'ok' if c['ok'] else 'FLAG'}] {c['name']}: {v}")
  return "\n".join(lines)
