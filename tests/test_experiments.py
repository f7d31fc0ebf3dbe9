"""The results-table suite: runs, resumes, writes Markdown."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from robust_distill.experiments import (
  study,
  study_io,
  study_plan,
  study_report,
  study_stats as R,
  table,
)
from robust_distill.experiments.study_plots import ltd_temperatures

from conftest import ROOT


@pytest.mark.slow  # a teacher, two students, their evaluations and the logit study: 2 minutes
def test_results_table_runs_resumes_and_writes_markdown(tmp_path, capsys):
  kw = dict(out_dir=str(tmp_path / "out"), eval_n=64, autoattack_n=32, only=["pgd_at", "dgad"])
  rows = table.run("smoke", str(tmp_path / "wd"), **kw)
  assert [r["entry"] for r in rows] == ["pgd_at", "dgad"]
  md = (tmp_path / "out" / "smoke.md").read_text()
  assert "| PGD-AT |" in md and "| DGAD |" in md and "AutoAttack" in md and "commit" in md
  assert "Shared TRADES teacher" in md and "Standard model" in md and "+0.00 |" in md
  for f in ("report.md", "hist_gap.png", "grid_a_high_b_low.png"):  # the logit study
    assert (tmp_path / "out" / "smoke_logits" / f).stat().st_size > 0, f
  capsys.readouterr()
  again = table.run("smoke", str(tmp_path / "wd"), **kw)  # finished entries are not rerun
  assert "robust_distill: stages" not in capsys.readouterr().out  # printed by every loop.run
  assert [r["clean_acc"] for r in again] == [r["clean_acc"] for r in rows]


def test_study_smoke_runs_resumes_publishes_the_teacher_and_reports(tmp_path, capsys):
  """Two tiny entries of the Fashion-MNIST study (configs/fmnist_study.py:smoke)."""
  out, wd = tmp_path / "out", tmp_path / "wd"
  study.run("smoke", str(wd), str(out), with_reference=False)
  res = out / "fmnist_study_smoke"
  entries = {p.name: json.loads(p.read_text()) for p in (res / "entries").iterdir()}
  assert sorted(entries) == ["ltd_trades_s0.json", "pgd_at_s0.json"]
  for r in entries.values():
    assert len(r["autoattack_points"]) == r["autoattack_n"] == 32
    assert r["autoattack_acc"] == r["autoattack_points"].count("1") / 32
    assert r["curves"]["val"] and r["curves"]["train"] and r["minutes"] > 0
  # The teacher is published as a workdir (best checkpoint, curves, evaluation), no TensorBoard.
  t = res / "teachers" / "robust"
  assert (t / "teacher" / "done.json").exists() and (t / "eval_autoattack.json").exists()
  assert not (t / "teacher" / "tb").exists()
  assert any((t / "teacher" / "ckpt_best").iterdir())
  md = (out / "fmnist_study_smoke.md").read_text()
  for s in ("| PGD-AT | 1/1 |", "| LTD-TRADES | 1/1 |", "FLOPs per image", "PGD-AT seed 0",
            "paired bootstrap", "tradeoff.png", "logits/report.md"):  # fmt: skip
    assert s in md, s
  assert (res / "logits" / "report.md").exists() and (res / "tradeoff.png").stat().st_size
  summary = json.loads((out / "fmnist_study_smoke.json").read_text())
  assert summary["runs_done"] == summary["runs_planned"] == 2
  # No reference step was measured: all the time is counted unscaled, in one segment per run.
  assert summary["minutes"] > 0
  assert summary["minutes_unscaled"] == pytest.approx(summary["minutes"])
  assert summary["minutes_scaled"] == pytest.approx(summary["minutes"])
  assert f"({summary['minutes_unscaled']:.1f} min without a reference counted unscaled)" in md
  for r in entries.values():
    assert [g["reference"] for g in r["segments"]] == [None]
    assert r["segments"][0]["seconds"] == pytest.approx(60 * r["minutes"])
  # Resumable: a second invocation trains nothing and reports the same figures.
  capsys.readouterr()
  again = study.run("smoke", str(wd), str(out), with_reference=False)
  assert "robust_distill: stages" not in capsys.readouterr().out
  assert [r["clean_acc"] for r in again["rows"]] == [r["clean_acc"] for r in summary["rows"]]
  # An entry file removed is rerun from its finished workdir (no training) with the same figures.
  (res / "entries" / "pgd_at_s0.json").unlink()
  study.run("smoke", str(wd), str(out), only=["pgd_at"], with_reference=False)
  assert (
    json.loads((res / "entries" / "pgd_at_s0.json").read_text())["clean_acc"]
    == (entries["pgd_at_s0.json"]["clean_acc"])
  )
  # A published teacher that the plan no longer describes is refused, not silently reused.
  cfg_path = t / "teacher" / "config.json"
  stored = json.loads(cfg_path.read_text())
  stored["teacher"]["optim"]["epochs"] += 1
  cfg_path.write_text(json.dumps(stored))
  with pytest.raises(ValueError, match="teacher stage trained with other settings"):
    study.run("smoke", str(wd), str(out), only=["pgd_at"], with_reference=False)


def test_study_overrides_and_entry_configs():
  plan = study_plan.load_plan("fmnist_study")
  teachers = {"robust": "T/robust/teacher", "clean": "T/clean/teacher"}
  c = study_plan.entry_config(plan, "trades_b1", 2, teachers, "fmnist_study")
  assert c.student.loss.trades_kl == 1.0 and c.seed == 2 and c.student.model_kwargs.width == 16
  assert c.eval.autoattack_n == 1000 and c.eval.n == -1 and c.eval.val_n == 5000
  assert "teacher" not in c.stages
  ltd = study_plan.entry_config(plan, "ltd_tau01", 0, teachers, "fmnist_study")
  assert ltd.student.loss.kd_teacher_temperature == 0.1 and ltd.eval.autoattack_n == 500
  assert ltd.teacher.workdir == "T/robust/teacher" and ltd.teacher.model_kwargs.width == 32
  assert ltd.teacher.attack.steps == 10 and ltd.teacher.source == "precomputed"
  assert ltd.teacher.optim.epochs == 20  # the robust teacher's schedule, not a student's
  ag = study_plan.entry_config(plan, "agkd_no_bml", 0, teachers, "fmnist_study")
  assert ag.teacher.workdir == "T/clean/teacher" and ag.student.init_from == ""
  assert ag.teacher.optim.epochs == 8 and ag.teacher.attack.steps == 0
  assert ag.student.loss.bml_triplet == 0.0 and ag.student.loss.at_adv == 1.0
  # The logit-manipulation rows test one paper's claim: AutoAttack on the ablations' 500 points.
  lm = study_plan.entry_config(plan, "lm_shuffle", 1, teachers, "fmnist_study")
  assert lm.eval.autoattack_n == 500 and lm.eval.n == -1
  # Every student shares the budget: model, epochs, training-attack steps.
  budgets = set()
  for name in plan.entries:
    e = study_plan.entry_config(plan, name, 0, teachers, "fmnist_study")
    steps = e.student.attack.steps
    budgets.add((e.student.model, e.student.model_kwargs.width, e.student.optim.epochs,
                 steps if plan.entries[name].group != "logit" else "none"))  # fmt: skip
  assert budgets == {
    ("small_cnn", 16, plan.student.epochs, 3),
    ("small_cnn", 16, plan.student.epochs, "none"),
  }
  with pytest.raises(ValueError, match="student.loss.no_such"):
    study_plan.apply_overrides(c, "student.loss.no_such=1")
  with pytest.raises(ValueError, match="PATH=VALUE"):
    study_plan.apply_overrides(c, "student.loss.trades_kl")


def test_study_statistics():
  a = np.array([1.0] * 70 + [0.0] * 30)
  b = np.array([1.0] * 60 + [0.0] * 40)
  d = R.bootstrap_diff(a, b)
  assert d["diff"] == pytest.approx(10.0) and d["lo"] < 10 < d["hi"] and d["n"] == 100
  assert R.bootstrap_diff(a, a) == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "n": 100}
  w = R.welch([0.70, 0.72, 0.71], [0.60, 0.61, 0.62])
  assert w["diff"] == pytest.approx(10.0) and w["lo"] < 10 < w["hi"] and w["lo"] > 5
  assert R.welch([0.7], [0.6, 0.61]) is None
  # The budget: each session's part scaled by its own reference step (to 700 ms); parts
  # without one as they are.
  total, unscaled = study_report.scaled_minutes([
    {"minutes": 10.0, "reference": {"ms": 350.0}},
    {"minutes": 10.0, "reference": {"ms": 1400.0, "other_cores": 0.0}},
    {"minutes": 4.0, "reference": None},
    {"minutes": 9.0, "reference": {"ms": 700.0},
     "segments": [{"seconds": 120.0, "reference": None},
                  {"seconds": 420.0, "reference": {"ms": 1400.0}}]},
  ])  # fmt: skip
  assert total == pytest.approx(20.0 + 5.0 + 4.0 + 2.0 + 3.5) and unscaled == pytest.approx(6.0)
  assert R.frontier_at([(0.8, 0.6), (0.9, 0.5)], 0.85) == pytest.approx(0.55)
  assert R.frontier_at([(0.8, 0.6), (0.9, 0.5)], 0.95) is None
  run = {
    "seed": 0,
    "curves": {"epochs": 10.0, "val": [[e, 0.8, 0.6 + e / 1000] for e in range(1, 11)]},
  }
  c = R.convergence(run)
  assert c["epochs"] == [7, 8, 9, 10] and c["movement_points"] == pytest.approx(0.3)
  # The criterion on the seeds' mean curve: two seeds that each move 0.6 points in opposite
  # directions average to a flat curve.
  up = {"seed": 1, "curves": {"epochs": 10.0, "val": [[e, 0.8, 0.7 + (e > 8) * 0.006]
                                                     for e in range(1, 11)]}}  # fmt: skip
  down = {"seed": 2, "curves": {"epochs": 10.0, "val": [[e, 0.8, 0.7 - (e > 8) * 0.006]
                                                       for e in range(1, 11)]}}  # fmt: skip
  assert R.convergence(up)["movement_points"] == pytest.approx(0.6)
  m = R.mean_convergence([up, down])
  assert m["seeds"] == [1, 2] and m["movement_points"] == pytest.approx(0.0, abs=1e-9)
  assert R.mean_convergence([up, {**down, "curves": {"epochs": 10.0, "val": []}}]) is None


def test_study_commits_results_as_they_land(tmp_path, monkeypatch):
  """``--commit``: each entry's result files become a commit of their own, nothing else does."""
  git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, capture_output=True, text=True)
  git("init", "-q")
  git("config", "user.email", "t@t")
  git("config", "user.name", "t")
  (tmp_path / "other.txt").write_text("staged, not a result")
  git("add", "other.txt")
  res = tmp_path / "results"
  (res / "entries").mkdir(parents=True)
  (res / "entries" / "a_s0.json").write_text("{}")
  assert study_io.git_commit_results([str(res)], "Study result: a")
  assert git("log", "--format=%s").stdout.split("\n")[0] == "Study result: a"
  assert git("show", "--name-only", "--format=").stdout.split() == ["results/entries/a_s0.json"]
  assert not study_io.git_commit_results([str(res)], "nothing changed")
  # Relative paths (the study's default --out_dir=results), from the repository's root.
  (res / "entries" / "b_s0.json").write_text("{}")
  monkeypatch.chdir(tmp_path)
  assert study_io.git_commit_results(["results/entries", "results"], "Study result: b")
  assert git("show", "--name-only", "--format=").stdout.split() == ["results/entries/b_s0.json"]


@pytest.mark.parametrize("suite", [["--suite=fmnist_study"], ["--suite", "fmnist_study"]])
def test_the_table_command_hands_the_study_suite_to_the_study(suite):
  with pytest.raises(SystemExit, match="^error: --only: unknown entries \\['nope'\\]"):
    table.main([*suite, "--only=nope"])  # one line, before any compute


def test_ltd_temperature_sweep_is_read_from_the_entries_as_trained():
  def e(cfg, sets, loss):
    return [{"method_config": f"configs/{cfg}.py:fmnist", "overrides": sets, "student_loss": loss}]

  entries = {
    "ltd_trades": e("ltd_trades", "", {"kd_teacher_temperature": 0.25}),
    "ltd_tau1": e(
      "ltd_trades", "student.loss.kd_teacher_temperature=1.0", {"kd_teacher_temperature": 1.0}
    ),  # fmt: skip
    "ltd_tau_s2": e("ltd_trades", "student.temperature=2.0", {"kd_teacher_temperature": 0.25}),
    "rslad": e("rslad", "", {"kd_teacher_temperature": 1.0}),
    "old": [{"method_config": "configs/ltd_trades.py:fmnist", "overrides": ""}],
  }
  assert ltd_temperatures(entries) == [(0.25, "ltd_trades"), (1.0, "ltd_tau1")]


def test_study_run_time_is_kept_per_invocation_with_its_reference(tmp_path):
  """A run's time survives an interruption, and each invocation's part keeps the reference step
  measured when that invocation started (the machine's speed differs between sessions)."""
  wd = tmp_path / "wd"
  wd.mkdir()
  (wd / "study_time.json").write_text(json.dumps({"seconds": 5.0}))  # from before segments

  def killed():
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    study_io.timed(killed, str(wd), {"ms": 500.0})
  kept = json.loads((wd / "study_time.json").read_text())
  assert [g["reference"] for g in kept["segments"]] == [None, {"ms": 500.0}]
  seconds, segments = study_io.timed(lambda: None, str(wd), {"ms": 900.0})
  assert [g["reference"] for g in segments] == [None, {"ms": 500.0}, {"ms": 900.0}]
  assert segments[0]["seconds"] == 5.0 and seconds == pytest.approx(
    sum(g["seconds"] for g in segments)
  )


def test_study_run_time_survives_a_kill_at_any_instant(tmp_path):
  """SIGKILL (no handler, no finally) loses at most one heartbeat of the invocation's time."""
  wd = tmp_path / "wd"
  code = (
    "import time\n"
    "from robust_distill.experiments import study_io\n"
    "study_io.HEARTBEAT_SECONDS = 0.2\n"
    f"study_io.timed(lambda: time.sleep(60), {str(wd)!r}, {{'ms': 450.0}})\n"
  )
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
  deadline = time.time() + 60
  while time.time() < deadline:
    f = wd / "study_time.json"
    if f.exists() and json.loads(f.read_text())["seconds"] >= 1.0:
      break
    time.sleep(0.2)
  proc.kill()
  proc.wait()
  kept = json.loads((wd / "study_time.json").read_text())
  assert kept["seconds"] >= 1.0 and kept["segments"][0]["open"]
  seconds, segments = study_io.timed(lambda: None, str(wd), {"ms": 900.0})
  assert [g["reference"] for g in segments] == [{"ms": 450.0}, {"ms": 900.0}]
  assert "open" not in segments[0] and segments[0]["seconds"] >= 1.0
  assert seconds == pytest.approx(sum(g["seconds"] for g in segments))


def test_runs_that_degraded_after_their_best_checkpoint_are_named():
  def run(robust):
    return {"seed": 3, "curves": {"val": [[0.5 * (i + 1), 0.8, r] for i, r in enumerate(robust)]}}

  # MART's shape in the study: best at epoch 1, chance afterwards.
  x = study_report.early_best("mart", run([0.60, 0.647, 0.099, 0.108]))
  assert x == {"entry": "mart", "seed": 3, "epoch": 1.0, "epochs": 2.0,
               "best": pytest.approx(64.7), "final": pytest.approx(10.8)}  # fmt: skip
  # A drop within a point (validation noise) or a best at the end is not named.
  assert study_report.early_best("a", run([0.60, 0.70, 0.695])) is None
  assert study_report.early_best("a", run([0.60, 0.70, 0.72])) is None
  assert study_report.early_best("a", run([])) is None
  # The first of equal maxima is the evaluated one (the loop keeps strict gains only).
  assert study_report.early_best("a", run([0.70, 0.70, 0.50]))["epoch"] == 0.5


def test_an_ablation_is_also_compared_with_its_full_methods_run_of_the_same_seed():
  full = [{"seed": s, "autoattack_points": p} for s, p in ((0, "1100"), (1, "1111"), (2, "1110"))]
  abl = [{"seed": 0, "autoattack_points": "1110"}]
  mine, theirs = R.same_seeds(abl, full)
  assert [r["seed"] for r in mine] == [r["seed"] for r in theirs] == [0]
  assert R.seed_points(theirs, 4).mean() == 0.5  # seed 0 alone, not the seeds' mean
  assert R.same_seeds(abl, full[1:]) == ([], [])  # no common seed


def test_logit_manipulations_are_compared_with_unmanipulated_distillation_across_seeds(tmp_path):
  """The logit paper's claim is shuffled or averaged non-max logits against the unmanipulated
  ones: the report pairs those rows with ``lm_none`` on the same points and across seeds."""
  plan = study_plan.load_plan("fmnist_study")

  def runs(points):
    return [{"seed": s, "clean_acc": 0.8, "pgd_acc": 0.3, "cw_acc": 0.3, "autoattack_n": 4,
             "autoattack_acc": p.count("1") / 4, "autoattack_points": p,
             "autoattack_checks_ok": True, "minutes": 1.0, "curves": {"val": []}}
            for s, p in enumerate(points)]  # fmt: skip

  entries = {"lm_none": runs(["1100", "1000"]), "lm_shuffle": runs(["1110", "1111"])}
  a = study_report.analyse(plan, str(tmp_path), entries)
  (x,) = a["ablation"]
  assert (x["entry"], x["full"], x["n"]) == ("lm_shuffle", "lm_none", 4)
  assert x["aa"] == pytest.approx(87.5) and x["full_aa"] == pytest.approx(37.5)
  assert x["seeds"]["diff"] == pytest.approx(50.0) and x["same_seed"] is None
  assert x["seeds"]["lo"] < 50.0 < x["seeds"]["hi"]
