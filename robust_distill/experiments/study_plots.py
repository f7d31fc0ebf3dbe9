"""The Fashion-MNIST study's plots: validation robust accuracy by epoch, AutoAttack accuracy
against LTD's teacher temperature, and the clean/robust trade-off with the TRADES frontier."""

import os

import numpy as np

from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend

from robust_distill.experiments.study_plan import parse_overrides
from robust_distill.experiments.study_stats import seed_points

MAIN_GROUPS = ("baseline", "distilled")


def ltd_temperatures(entries: dict) -> list:
  """``[(tau_T, entry)]`` for the LTD-TRADES entries that differ from it only in the teacher's
  temperature (read from the entry files, as trained), sorted by ``tau_T``."""
  out = []
  for k, runs in entries.items():
    r = runs[0]
    sets = [path for _, path, _ in parse_overrides(r.get("overrides", ""))]
    if (
      r.get("method_config", "").startswith("configs/ltd_trades.py")
      and set(sets) <= {"student.loss.kd_teacher_temperature"}
      and "kd_teacher_temperature" in r.get("student_loss", {})
    ):
      out.append((float(r["student_loss"]["kd_teacher_temperature"]), k))
  return sorted(out)


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
  taus = ltd_temperatures(entries)
  n = min((entries[k][0]["autoattack_n"] for _, k in taus), default=0)
  if taus:
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    # Seed 0 at every temperature (the ablations run it alone), and the mean of all seeds where
    # a temperature has several: a mean beside single runs would look like a peak.
    s0 = [
      (t, 100 * seed_points([r], n).mean()) for t, k in taus for r in entries[k] if r["seed"] == 0
    ]
    ax.plot([p[0] for p in s0], [p[1] for p in s0], marker="o", label="seed 0")
    many = [(t, entries[k]) for t, k in taus if len(entries[k]) > 1]
    for t, runs in many:
      accs = [100 * seed_points([r], n).mean() for r in runs]
      ax.errorbar([t], [np.mean(accs)], yerr=[np.std(accs)], fmt="s", capsize=4, color="C1",
                  label=f"mean ± std of {len(runs)} seeds")  # fmt: skip
    ax.set(xscale="log", xlabel="teacher temperature tau_T",
           ylabel=f"AutoAttack accuracy (%), first {n} points", title="LTD: tau_T")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
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
