"""The Fashion-MNIST study: does robust distillation earn its place when a strong teacher is
distilled into a smaller student, trained to convergence and evaluated under AutoAttack?

    python -m robust_distill.experiments.study [--workdir=runs/fmnist_study] [--only=a,b]
    python -m robust_distill.experiments.table --suite=fmnist_study     # the same command

The plan (teachers, student budget, evaluation, entries and their overrides) is
``configs/fmnist_study.py``. The command:

1. trains each teacher it needs once (``WORKDIR/teacher_<kind>``), evaluates the robust one
   like a student, and publishes it to ``results/fmnist_study/teachers/<kind>/`` (a workdir
   holding the best checkpoint, its config, its training curves and evaluation): later runs,
   and readers, reuse the published teacher instead of training it again;
2. runs every entry and seed in ``WORKDIR/<entry>_s<seed>`` (an interrupted entry resumes where
   it stopped) and writes its figures, curves, per-point AutoAttack results, minutes and the
   machine's reference step to ``results/fmnist_study/entries/<entry>_s<seed>.json``; an entry
   whose file exists is done and is not rerun, so the command resumes entry by entry, and each
   file can be committed as it lands;
3. after every entry, rewrites ``results/fmnist_study.md``, ``results/fmnist_study.json`` and
   the plots in ``results/fmnist_study/`` from the entries done so far
   (``robust_distill.experiments.study_report``).

``--suite=smoke`` runs two tiny entries on synthetic data into ``results/fmnist_study_smoke``
(or ``--out_dir``) in a few minutes: the test suite's check of this command.
"""

from robust_distill import compile_cache, cpu_devices

cpu_devices.configure_from_argv()  # before JAX is imported: XLA reads the flag once
compile_cache.configure()  # likewise: JAX reads its cache settings at import

import argparse
import functools
import json
import os
import signal
import shutil
import sys


from robust_distill import config as config_lib, errors, files, parallel, workdir as workdir_lib
from robust_distill.analysis import logits as logit_study
from robust_distill.eval.stage import evaluate_stage
from robust_distill.experiments import study_report
from robust_distill.experiments.study_plan import (
  ROOT,
  entry_config,
  eval_block,
  load_plan,
  teacher_kind,
  teacher_run_config,
)
from robust_distill.experiments.study_io import aa_points, git_commit_results, reference, timed
from robust_distill.experiments.study_stats import curves
from robust_distill.train import loop, resume
from robust_distill.train.interrupt import log


def entry_path(out: str, name: str, seed: int) -> str:
  """The result file of entry ``name`` with ``seed``: its existence marks the entry done."""
  return os.path.join(out, "entries", f"{name}_s{seed}.json")


def _figures(wd: str) -> dict:
  with open(os.path.join(wd, "eval.json")) as f:
    ev = json.load(f)
  with open(os.path.join(wd, "eval_autoattack.json")) as f:
    aa = json.load(f)
  keep = ("clean_acc", "pgd_acc", "n", "cw_acc", "cw_n", "eps", "pgd_steps", "cw_steps",
          "git_commit", "code_fingerprint", "autoattack_acc", "autoattack_clean_acc",
          "autoattack_n", "autoattack_checks_ok")  # fmt: skip
  out = {k: ev[k] for k in keep if k in ev}
  out["autoattack_per_attack"] = aa["per_attack"]
  out["autoattack_seconds"] = aa["seconds"]
  out["autoattack_checks"] = [{k: c[k] for k in ("name", "ok", "value")} for c in aa["checks"]]
  out["autoattack_points"] = aa_points(wd)
  out["eval_seconds"] = ev["seconds"]
  return out


def publish_teacher(kind: str, wd: str, dest: str) -> None:
  """Copies teacher ``kind``'s stage (its newest best checkpoint with its manifest, config,
  curves; no TensorBoard, no other checkpoints) and evaluation from workdir ``wd`` to ``dest``,
  atomically."""
  src = workdir_lib.stage_dir(wd, "teacher")
  tmp = dest + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  stage = os.path.join(tmp, "teacher")
  os.makedirs(os.path.join(stage, "manifests"))
  for name in ("config.json", "done.json", "metrics.jsonl"):
    shutil.copy(os.path.join(src, name), os.path.join(stage, name))
  step = max(int(d) for d in os.listdir(os.path.join(src, "ckpt_best")) if d.isdigit())
  shutil.copytree(
    os.path.join(src, "ckpt_best", str(step)), os.path.join(stage, "ckpt_best", str(step))
  )
  manifest = os.path.join("manifests", f"best-{step}.json")
  shutil.copy(os.path.join(src, manifest), os.path.join(stage, manifest))
  for name in ("eval.json", "eval_autoattack.json", "study_time.json"):
    if os.path.exists(os.path.join(wd, name)):
      shutil.copy(os.path.join(wd, name), os.path.join(tmp, name))
  shutil.rmtree(dest, ignore_errors=True)
  os.replace(tmp, dest)


def ensure_teacher(kind: str, suite: str, workdir: str, out: str, evaluate: bool,
                   with_reference: bool = True, session_ref=lambda: None) -> str:  # fmt: skip
  """The published stage dir of teacher ``kind``, training (and, if ``evaluate``, evaluating)
  and publishing it first when ``out/teachers/<kind>`` does not hold it. ``session_ref()``: the
  reference step of this invocation, measured before its first work (it scales that work)."""
  dest = os.path.join(out, "teachers", kind)
  cfg = teacher_run_config(kind, suite)
  # A published teacher trained under another plan is an error, not a silent substitute.
  resume.check_resumable(cfg, "teacher", os.path.join(dest, "teacher"))
  if not os.path.exists(os.path.join(dest, "teacher", "done.json")):
    wd = os.path.join(workdir, f"teacher_{kind}")
    log(f"[study] teacher {kind!r}: training in {wd}")

    def train_and_eval():
      loop.run(cfg, wd)
      if evaluate and not os.path.exists(os.path.join(wd, "eval.json")):
        cfg.eval.update(eval_block(load_plan(suite), "baseline"))  # trained: only eval reads it
        mesh = parallel.make_mesh(cfg.num_devices)
        test = loop.load_data(cfg)["test"]
        res = evaluate_stage(cfg, "teacher", wd, test, mesh, log=log)
        files.write_json(os.path.join(wd, "eval.json"), res)

    seconds, segments = timed(train_and_eval, wd, session_ref())
    files.write_json(
      os.path.join(wd, "study_time.json"),
      {
        "seconds": seconds,
        "segments": segments,
        "reference": reference() if with_reference else None,
      },
    )
    publish_teacher(kind, wd, dest)
    log(f"[study] teacher {kind!r} published to {dest} ({seconds / 60:.1f} min)")
  return os.path.join(dest, "teacher")


def run_entry(plan, name: str, seed: int, suite: str, workdir: str, out: str, teachers: dict,
              *, with_reference: bool = True, session_ref=lambda: None) -> dict:  # fmt: skip
  """Runs (or resumes) entry ``name`` with ``seed`` and writes its result file; returns it."""
  path = entry_path(out, name, seed)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  cfg = entry_config(plan, name, seed, teachers, suite)
  config_lib.validate(cfg)
  wd = os.path.join(workdir, f"{name}_s{seed}")
  e = plan.entries[name]
  log(f"[study] {e.label} (seed {seed}) in {wd}")
  seconds, segments = timed(lambda: loop.run(cfg, wd), wd, session_ref())
  result = {
    "entry": name,
    "seed": seed,
    "label": e.label,
    "group": e.group,
    "method_config": f"configs/{e.config}.py:fmnist",
    "overrides": e.set,
    "student_model": {
      "model": cfg.student.model,
      "model_kwargs": cfg.student.model_kwargs.to_dict(),
    },
    "student_loss": cfg.student.loss.to_dict(),  # every term's weight and temperature
    "student_epochs": float(cfg.student.optim.epochs),
    "student_attack_steps": int(cfg.student.attack.steps),
    "minutes": seconds / 60,
    "reference": reference() if with_reference else None,
    "segments": segments,  # per invocation: seconds and the reference measured at its start
    **_figures(wd),
    "curves": curves(workdir_lib.stage_dir(wd, "student")),
  }
  files.write_json(path, result)
  log(
    f"[study] {e.label} seed {seed}: clean {result['clean_acc']:.4f}, PGD-20 "
    f"{result['pgd_acc']:.4f}, AutoAttack {result['autoattack_acc']:.4f} "
    f"({seconds / 60:.1f} min); wrote {path}"
  )
  return result


def run(suite: str, workdir: str, out_dir: str, *, only=None, with_reference: bool = True,
        commit: bool = False) -> dict:  # fmt: skip
  """The whole study (or the entries in ``only``), resumably; returns the report's summary."""
  plan = load_plan(suite)
  name = "fmnist_study" + ("_smoke" if suite == "smoke" else "")
  out = os.path.join(out_dir, name)
  unknown = sorted(set(only or ()) - set(plan.entries))
  if unknown:
    raise ValueError(f"--only: unknown entries {unknown}; valid: {sorted(plan.entries)}")
  files.check_writable(out)
  entries = [k for k in plan.order.split(",") if not only or k in only]
  teachers = {}

  @functools.cache
  def session_ref():
    """This invocation's reference step, measured once, before its first training or
    evaluation (an invocation with nothing left to run measures none): the time of every run
    segment done in this invocation is scaled by it (one after each run is also recorded)."""
    ref = reference() if with_reference else None
    if ref:
      log(f"[study] reference step {ref['ms']} ms ({ref['other_cores']} other cores)")
    return ref

  def teacher(kind: str) -> str:  # trained (and published) when first needed
    if kind not in teachers:
      teachers[kind] = ensure_teacher(
        kind, suite, workdir, out, evaluate=kind == "robust", with_reference=with_reference,
        session_ref=session_ref,
      )  # fmt: skip
    return teachers[kind]

  teacher("robust")
  summary = study_report.write(plan, out_dir, name)
  for k in entries:
    c = config_lib.load(os.path.join(ROOT, "configs", f"{plan.entries[k].config}.py:fmnist"))
    if "teacher" in c.stages:
      teacher(teacher_kind(c))
    for seed in range(plan.entries[k].seeds):
      done = os.path.exists(entry_path(out, k, seed))
      r = run_entry(plan, k, seed, suite, workdir, out, teachers, with_reference=with_reference,
                    session_ref=session_ref)  # fmt: skip
      summary = study_report.write(plan, out_dir, name)
      if commit and not done:  # each result lands in the history as soon as it exists
        paths = [out, os.path.join(out_dir, f"{name}.md"), os.path.join(out_dir, f"{name}.json")]
        msg = (
          f"Study result: {r['label']} seed {seed}: clean {100 * r['clean_acc']:.2f}, PGD-20 "
          f"{100 * r['pgd_acc']:.2f}, AutoAttack {100 * r['autoattack_acc']:.2f} "
          f"({r['minutes']:.1f} min), committed as it lands so that a session's end loses nothing"
        )
        log(
          f"[study] committed {k}_s{seed}"
          if git_commit_results(paths, msg)
          else "[study] not committed"
        )
  # The logit-distribution study: the robust teacher against a plainly trained one.
  logit_dir = os.path.join(out, "logits")
  if not os.path.exists(os.path.join(logit_dir, "report.md")):
    logit_study.study(
      os.path.dirname(teacher("standard")),
      os.path.dirname(teacher("robust")),
      logit_dir,
      n=2000 if suite != "smoke" else 64,
    )
    summary = study_report.write(plan, out_dir, name)
  return summary


def _interrupt(signum, _frame):
  raise loop.Interrupted(f"signal {signum}: stopped; the entry in progress resumes next time")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--suite", default="fmnist_study", choices=["fmnist_study", "smoke"])
  p.add_argument("--workdir", default="", help="default: runs/<suite>")
  p.add_argument("--out_dir", default="results")
  p.add_argument("--only", default="", help="comma-separated entries (default: all)")
  p.add_argument(
    "--no_reference", action="store_true", help="skip timing the PyTorch reference step"
  )
  p.add_argument(
    "--commit", action="store_true", help="git-commit each entry's results as soon as they exist"
  )
  cpu_devices.add_argument(p)
  a = p.parse_args(argv)
  # SIGTERM outside a training stage (which turns it into a checkpoint and loop.Interrupted)
  # exits through the same path, so that the entry in progress records its time.
  signal.signal(signal.SIGTERM, _interrupt)
  try:
    run(
      a.suite,
      a.workdir or f"runs/{a.suite}",
      a.out_dir,
      only=[s for s in a.only.split(",") if s] or None,
      with_reference=not a.no_reference,
      commit=a.commit,
    )
  except loop.Interrupted as e:  # SIGTERM / SIGINT: the entry in progress resumes next time
    print(e, flush=True)
    sys.exit(3)
  except resume.ConfigMismatch as e:  # the plan changed under an unfinished entry
    sys.exit(
      f"error: {e.stage_directory} was trained with other settings ({'; '.join(e.diffs)}): the "
      "study's plan changed since that entry started; delete that workdir to rerun the entry "
      "under the current plan"
    )
  except errors.EXPECTED as e:
    sys.exit(f"error: {errors.one_line(e)}")


if __name__ == "__main__":
  main()
