"""The methods' results table: every method trained with one shared teacher and one budget,
evaluated the same way, written to ``results/<suite>.md`` and ``results/<suite>.json``.

    python -m robust_distill.experiments.table --suite=fmnist [--workdir=runs/table_fmnist]

* The shared teacher (the quickstart's TRADES small CNN) is trained once in
  ``WORKDIR/teacher_shared``; each method's config (``configs/<method>.py:<suite>``) then reuses it
  through ``teacher.workdir``, with the same student, epochs and training-attack budget.
* Each method runs in ``WORKDIR/<entry>``: finished stages are skipped, an interrupted stage
  resumes, and an entry whose ``eval.json`` exists is not rerun, so the command is resumable.
* Evaluation: clean, PGD-20 and CW-30 on the first ``--eval_n`` test points, and AutoAttack
  (standard) on the first ``--autoattack_n`` of them, with its honesty checks.
* ``smoke`` runs the same table on synthetic data in about a minute per entry (tests).
"""

import argparse
import importlib.util
import json
import os
import sys
import time

from robust_distill import hostdevices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (entry, config file, overrides, label): the 13 methods and variants of the table.
ENTRIES = (
    ("pgd_at", "pgd_at", {}, "PGD-AT"),
    ("trades", "trades", {}, "TRADES"),
    ("mart", "mart", {}, "MART"),
    ("awp", "awp", {}, "AWP (AT-AWP)"),
    ("ard", "ard", {}, "ARD"),
    ("rslad", "rslad", {}, "RSLAD"),
    ("iad", "iad", {}, "IAD-I"),
    ("adaad", "adaad", {}, "AdaAD"),
    ("ltd_trades", "ltd_trades", {}, "LTD-TRADES"),
    ("ltd_awp", "ltd_awp", {}, "LTD-AWP"),
    ("dgad", "dgad", {}, "DGAD"),
    ("lm_none", "logit_manipulation", {"kd_teacher_transform": "none"},
     "clean-only KD from the AT teacher"),
    ("lm_shuffle", "logit_manipulation", {"kd_teacher_transform": "nonmax_shuffle"},
     "clean-only KD, non-max logits shuffled"),
    ("lm_mean", "logit_manipulation", {"kd_teacher_transform": "nonmax_mean"},
     "clean-only KD, non-max logits averaged"),
)
DISTILLED = ("rslad", "adaad", "ltd_trades", "dgad")  # compared with PGD-AT in the acceptance


def load_config(name: str, arg: str):
  path = os.path.join(ROOT, "configs", name + ".py")
  spec = importlib.util.spec_from_file_location(f"config_{name}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def entry_config(entry, suite: str, workdir: str, *, eval_n: int, autoattack_n: int):
  _, cfg_name, overrides, _ = entry
  c = load_config(cfg_name, suite)
  c.student.loss.update(overrides)
  c.teacher.workdir = os.path.join(workdir, "teacher_shared", "teacher")
  c.stages = ",".join(s for s in c.stages.split(",") if s != "teacher")
  c.eval.n = eval_n
  c.eval.autoattack_n = autoattack_n
  if suite == "smoke":
    c.eval.autoattack = "standard"
    c.eval.autoattack_opts = "n_iter=4,fab_iter=4,n_queries=20,n_target_classes=3"
  return c


def markdown(rows: list[dict], meta: dict) -> str:
  lines = [f"# Results: {meta['suite']}", "",
           f"Produced by `{meta['command']}` at commit `{meta['git_commit']}` "
           f"({meta['wall_time']}, {meta['machine']}).", "",
           f"Every student: {meta['student']}. Robust accuracy at L-inf eps = {meta['eps']}: "
           f"PGD-{meta['pgd_steps']} and CW-{meta['cw_steps']} on the first {meta['eval_n']} "
           f"test points, AutoAttack (standard) on the first {meta['autoattack_n']}.", "",
           f"| method | clean | PGD-{meta['pgd_steps']} | CW-{meta['cw_steps']} | AutoAttack | "
           "AA checks | train time |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['label']} | not run: {r['error']} | | | | | |")
      continue
    aa = f"{100 * r['autoattack_acc']:.2f}" if "autoattack_acc" in r else "-"
    ok = {True: "ok", False: "FLAGS", None: "-"}[r.get("autoattack_checks_ok")]
    lines.append(f"| {r['label']} | {100 * r['clean_acc']:.2f} | {100 * r['pgd_acc']:.2f} | "
                 f"{100 * r['cw_acc']:.2f} | {aa} | {ok} | {r.get('train_minutes', 0):.1f} min |")
  return "\n".join(lines) + "\n"


def run(suite: str, workdir: str, *, out_dir: str, eval_n: int, autoattack_n: int,
        only: list[str] | None = None) -> list[dict]:
  # pylint: disable=import-outside-toplevel
  from robust_distill import config as config_lib
  from robust_distill.train import loop
  t0 = time.perf_counter()
  base = load_config("fmnist_ltd", "smoke" if suite == "smoke" else "")
  base.stages = "teacher"
  loop.log(f"[table] shared teacher in {workdir}/teacher_shared")
  loop.run(base, os.path.join(workdir, "teacher_shared"))
  rows = []
  for entry in ENTRIES:
    name, _, _, label = entry
    if only and name not in only:
      continue
    wd = os.path.join(workdir, name)
    done = os.path.join(wd, "eval.json")
    if not os.path.exists(done):
      cfg = entry_config(entry, suite, workdir, eval_n=eval_n, autoattack_n=autoattack_n)
      config_lib.validate(cfg)
      loop.log(f"[table] {label}: training in {wd}")
      t = time.perf_counter()
      loop.run(cfg, wd)
      with open(os.path.join(wd, "table_time.json"), "w") as f:
        json.dump({"seconds": time.perf_counter() - t}, f)
    with open(done) as f:
      res = json.load(f)
    tt = os.path.join(wd, "table_time.json")
    minutes = json.load(open(tt))["seconds"] / 60 if os.path.exists(tt) else 0.0
    rows.append({"entry": name, "label": label, "train_minutes": minutes, **res})
  wall = time.perf_counter() - t0
  meta = {"suite": suite, "command": " ".join(["python -m robust_distill.experiments.table"]
                                              + sys.argv[1:]),
          "git_commit": loop._git_commit(),  # pylint: disable=protected-access
          "wall_time": f"{wall / 60:.1f} min this invocation",
          "machine": f"{os.cpu_count()} CPU cores", "eps": rows[0].get("eps") if rows else None,
          "eval_n": rows[0].get("n") if rows else eval_n,
          "autoattack_n": rows[0].get("autoattack_n") if rows else autoattack_n,
          "pgd_steps": rows[0].get("pgd_steps") if rows else 20,
          "cw_steps": rows[0].get("cw_steps") if rows else 30,
          "student": "small CNN, 2 epochs, 3-step training attack, SGD 0.05 cosine, wd 2e-4"}
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f"{suite}.json"), "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=1)
  with open(os.path.join(out_dir, f"{suite}.md"), "w") as f:
    f.write(markdown(rows, meta))
  loop.log(f"[table] wrote {out_dir}/{suite}.md in {wall / 60:.1f} min")
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--suite", default="fmnist", choices=["fmnist", "smoke"])
  p.add_argument("--workdir", default="")
  p.add_argument("--out_dir", default="results")
  p.add_argument("--eval_n", type=int, default=2000)
  p.add_argument("--autoattack_n", type=int, default=250)
  p.add_argument("--only", default="", help="comma-separated entries (default: all)")
  p.add_argument("--host_devices", type=int, default=hostdevices.DEFAULT_HOST_DEVICES)
  a = p.parse_args(argv)
  hostdevices.configure(a.host_devices)
  run(a.suite, a.workdir or f"runs/table_{a.suite}", out_dir=a.out_dir, eval_n=a.eval_n,
      autoattack_n=a.autoattack_n, only=[s for s in a.only.split(",") if s] or None)


if __name__ == "__main__":
  main()
