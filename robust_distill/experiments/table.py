"""The methods' results table: every method trained with one shared teacher and one budget,
evaluated the same way, written to ``results/<suite>.md`` and ``results/<suite>.json``.

    python -m robust_distill.experiments.table --suite=fmnist [--workdir=runs/table_fmnist]
    python -m robust_distill.experiments.table --suite=fmnist_study  # = experiments.study

* The shared teacher (the quickstart's TRADES small CNN) is trained once in
  ``WORKDIR/teacher_shared``; each method's config (``configs/<method>.py:<suite>``) then reuses it
  through ``teacher.workdir``, with the same student, epochs and training-attack budget.
  AGKD-BML distils from a naturally trained teacher by design (CE with label smoothing 0.5, as
  in its code), trained once in ``WORKDIR/teacher_clean`` with the same budget.
* The logit-distribution study (Seguin et al.) compares a standard model (plain CE, same
  architecture and budget, ``WORKDIR/standard``) with the shared TRADES teacher on the test
  split and writes ``<out_dir>/<suite>_logits/`` (report.md and PNGs); the clean-only
  distillation students with manipulated non-max logits are rows of the table.
* Each method runs in ``WORKDIR/<entry>``: finished stages are skipped, an interrupted stage
  resumes, and a finished entry (``table_time.json`` written after its evaluation) is not rerun,
  so the command is resumable; the wall time of every entry is recorded and summed.
* Evaluation: clean, PGD-20 and CW-30 on the first ``--eval_n`` (2000) test points, and
  AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) on the first ``--autoattack_n`` (128)
  of them in one padded batch, with its honesty checks on ``--check_n`` (64) points. These
  budgets keep the whole table under 3 hours on 2 CPU cores.
* ``smoke`` runs the same table on synthetic data in about a minute per entry (tests).
"""

from robust_distill import compile_cache, cpu_devices

cpu_devices.configure_from_argv()  # before JAX is imported: XLA reads the flag once
compile_cache.configure()  # likewise: JAX reads its cache settings at import

import argparse
import json
import os
import sys
import time

from robust_distill import config as config_lib, workdir as workdir_lib
from robust_distill.analysis import logits as logit_study
from robust_distill.eval import report
from robust_distill.experiments.markdown import budget, markdown
from robust_distill.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (entry, config file, student-loss overrides, label): the 13 methods and variants of the table.
_METHODS = dict(
  pgd_at="PGD-AT",
  trades="TRADES",
  mart="MART",
  awp="AWP (AT-AWP)",
  ard="ARD",
  rslad="RSLAD",
  iad="IAD-I",
  adaad="AdaAD",
  ltd_trades="LTD-TRADES",
  ltd_awp="LTD-AWP",
  dgad="DGAD",
  agkd_bml="AGKD-BML",
)
_LOGIT_MANIPULATIONS = (
  ("none", "clean-only KD from the AT teacher"),
  ("nonmax_shuffle", "clean-only KD, non-max logits shuffled"),
  ("nonmax_mean", "clean-only KD, non-max logits averaged"),
)
ENTRIES = tuple((k, k, {}, label) for k, label in _METHODS.items()) + tuple(
  ("lm_" + mode.replace("nonmax_", ""), "logit_manipulation", {"kd_teacher_transform": mode}, label)
  for mode, label in _LOGIT_MANIPULATIONS
)


def load_config(name: str, arg: str):
  """``configs/<name>.py``'s ``get_config(arg)``."""
  return config_lib.load(os.path.join(ROOT, "configs", f"{name}.py:{arg}"))


# The teachers the table trains once: name -> (workdir, config file, teacher-stage overrides).
TEACHERS = {
  "robust": ("teacher_shared", "fmnist_ltd", {}),
  "clean": ("teacher_clean", "agkd_bml", {}),
  "standard": ("standard", "agkd_bml", {"loss.label_smoothing": 0.0}),
}


def teacher_kind(c) -> str:
  """'clean' for a config whose teacher is trained without attacks (AGKD-BML), else 'robust'."""
  return "clean" if c.teacher.attack.steps == 0 else "robust"


def teacher_config(kind: str, suite: str):
  """The config that trains teacher ``kind`` of ``TEACHERS`` (its teacher stage only)."""
  _, cfg_name, overrides = TEACHERS[kind]
  c = load_config(
    cfg_name, "smoke" if suite == "smoke" else ("" if cfg_name == "fmnist_ltd" else suite)
  )
  c.stages = "teacher"
  c.teacher.workdir = ""
  for path, value in overrides.items():
    block, key = path.split(".")
    c.teacher[block][key] = value
  return c


def entry_config(
  entry, suite: str, workdir: str, *, eval_n: int, autoattack_n: int, check_n: int = 64
):
  _, cfg_name, overrides, _ = entry
  c = load_config(cfg_name, suite)
  c.student.loss.update(overrides)
  kind = teacher_kind(c)
  c.teacher.workdir = os.path.join(workdir, TEACHERS[kind][0], "teacher")
  c.stages = ",".join(s for s in c.stages.split(",") if s != "teacher")
  c.eval.n = eval_n
  c.eval.autoattack_n = autoattack_n
  # One padded batch holds all the points (a multiple of 8 devices, at most 256).
  c.eval.autoattack_batch_size = min(256, -(-autoattack_n // 8) * 8)
  c.eval.autoattack_check_n = check_n
  if suite == "smoke":
    c.eval.autoattack = "standard"
    c.eval.autoattack_opts = "n_iter=4,fab_iter=4,n_queries=20,n_target_classes=3"
  return c


def _timed_run(cfg, wd: str) -> float:
  """Runs ``cfg`` in ``wd`` unless it finished before; returns its recorded minutes."""
  tt = os.path.join(wd, "table_time.json")
  if not os.path.exists(tt):
    t = time.perf_counter()
    loop.run(cfg, wd)
    report.write_json(tt, {"seconds": time.perf_counter() - t})
  with open(tt) as f:
    return json.load(f)["seconds"] / 60


def _teacher_row(kind: str, wd: str, minutes: float) -> dict:
  with open(os.path.join(wd, "teacher", "done.json")) as f:
    v = json.load(f)["final_val"]
  label = {
    "robust": "Shared TRADES teacher",
    "clean": "AGKD-BML's clean teacher (CE, label smoothing 0.5)",
    "standard": "Standard model of the logit study (plain CE)",
  }[kind]
  return {
    "kind": kind,
    "label": label,
    "val_clean": v["val/clean_acc"],
    "val_pgd": v["val/pgd_acc"],
    "minutes": minutes,
  }


def run(
  suite: str,
  workdir: str,
  *,
  out_dir: str,
  eval_n: int,
  autoattack_n: int,
  check_n: int = 64,
  only: list[str] | None = None,
  study_n: int = 2000,
) -> list[dict]:
  """Trains and evaluates the teachers and the entries (all, or those in ``only``), runs the
  logit study, and writes ``out_dir/<suite>.md``, ``.json`` and ``<suite>_logits/``."""
  t0 = time.perf_counter()
  entries = [e for e in ENTRIES if not only or e[0] in only]
  kinds = {teacher_kind(load_config(e[1], suite)) for e in entries}
  teachers = []
  for kind in [k for k in TEACHERS if k in kinds | {"robust", "standard"}]:
    wd = os.path.join(workdir, TEACHERS[kind][0])
    loop.log(f"[table] teacher {kind!r} in {wd}")
    minutes = _timed_run(teacher_config(kind, suite), wd)
    teachers.append(_teacher_row(kind, wd, minutes))
  rows = []
  for entry in entries:
    name, _, _, label = entry
    wd = os.path.join(workdir, name)
    cfg = entry_config(
      entry, suite, workdir, eval_n=eval_n, autoattack_n=autoattack_n, check_n=check_n
    )
    config_lib.validate(cfg)
    loop.log(f"[table] {label} in {wd}")
    minutes = _timed_run(cfg, wd)
    with open(os.path.join(wd, "eval.json")) as f:
      rows.append({"entry": name, "label": label, "minutes": minutes, **json.load(f)})
  study_dir = os.path.join(out_dir, f"{suite}_logits")
  cmp = logit_study.study(
    os.path.join(workdir, TEACHERS["standard"][0]),
    os.path.join(workdir, TEACHERS["robust"][0]),
    study_dir,
    n=study_n,
  )
  wall = time.perf_counter() - t0
  total = sum(t["minutes"] for t in teachers) + sum(r["minutes"] for r in rows)
  val_steps = teacher_config("robust", suite).eval.val_pgd_steps
  meta = {
    "suite": suite,
    "command": " ".join(["python -m robust_distill.experiments.table"] + sys.argv[1:]),
    "git_commit": workdir_lib.git_commit(),
    "wall_time": f"{wall / 60:.1f} min this invocation; {total:.1f} min of training and "
    "evaluation in all",
    "wall_seconds": wall,
    "total_minutes": total,
    "machine": f"{os.cpu_count()} CPU cores",
    "eps": rows[0].get("eps") if rows else None,
    "eval_n": rows[0].get("n") if rows else eval_n,
    "autoattack_n": rows[0].get("autoattack_n") if rows else autoattack_n,
    "pgd_steps": rows[0].get("pgd_steps") if rows else 20,
    "cw_steps": rows[0].get("cw_steps") if rows else 30,
    "student": budget(
      entry_config(ENTRIES[0], suite, workdir, eval_n=eval_n, autoattack_n=autoattack_n).student
    ),
    "teachers": [dict(t, val_pgd_steps=val_steps) for t in teachers],
    "logit_study": os.path.basename(study_dir),
    "logit_study_spearman": cmp["spearman_confidence"],
  }
  report.write_json(os.path.join(out_dir, f"{suite}.json"), {"meta": meta, "rows": rows})
  with open(os.path.join(out_dir, f"{suite}.md"), "w") as f:
    f.write(markdown(rows, meta))
  loop.log(
    f"[table] wrote {out_dir}/{suite}.md; wall time {wall / 60:.1f} min this invocation "
    f"({total:.1f} min of training and evaluation in all)"
  )
  return rows


def main(argv=None):
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--suite", default="fmnist")
  known, rest = pre.parse_known_args(argv)
  if known.suite == "fmnist_study":
    # The study (configs/fmnist_study.py) has its own module and flags; the same command.
    from robust_distill.experiments import study  # noqa: PLC0415 (only this suite needs it)

    return study.main(rest)
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--suite", default="fmnist", choices=["fmnist", "smoke", "fmnist_study"])
  p.add_argument("--workdir", default="")
  p.add_argument("--out_dir", default="results")
  p.add_argument("--eval_n", type=int, default=2000)
  p.add_argument("--autoattack_n", type=int, default=128)
  p.add_argument("--check_n", type=int, default=64, help="points of the AA honesty checks")
  p.add_argument("--study_n", type=int, default=2000, help="test points of the logit study")
  p.add_argument("--only", default="", help="comma-separated entries (default: all)")
  cpu_devices.add_argument(p)
  a = p.parse_args(argv)
  run(
    a.suite,
    a.workdir or f"runs/table_{a.suite}",
    out_dir=a.out_dir,
    eval_n=a.eval_n,
    autoattack_n=a.autoattack_n,
    check_n=a.check_n,
    study_n=a.study_n,
    only=[s for s in a.only.split(",") if s] or None,
  )


if __name__ == "__main__":
  main()
