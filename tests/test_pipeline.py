"""End-to-end behaviour of the training pipeline on synthetic data: resume exactness,
checkpoints (8 devices -> 1, corruption), NaN handling, metrics files, notebook restore."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import robust_distill
from robust_distill import models, parallel, workdir as workdir_lib
from robust_distill.train import checkpoint as ckpt_lib
from robust_distill.eval import report
from robust_distill.eval.stage import evaluate_stage
from robust_distill.train import loop

from conftest import ROOT, cli_env, run_python, smoke_config


def _params(workdir, stage="student", which="latest"):
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, stage))
  step = ck.steps(which)[-1]
  meta = ck.restore_meta(step, which)
  ck.close()
  return step, meta


def _leaves(workdir, stage="teacher", which="latest"):
  cfg = smoke_config()
  m = workdir_lib.load_stage_model(cfg, stage, workdir, parallel.make_mesh(), which=which)
  return [np.asarray(x) for x in jax.tree.leaves(m.params)]


# The session's trained smoke pipeline (conftest.trained_workdir), read-only; its tests share a
# worker.
pytestmark = pytest.mark.xdist_group("trained")


@pytest.fixture
def full_run(trained_workdir):
  return trained_workdir


@pytest.fixture
def full_copy(trained_workdir, tmp_path):
  """A private copy of the trained workdir, for tests that write into it."""
  wd = str(tmp_path / "copy")
  shutil.copytree(trained_workdir[0], wd)
  return wd, trained_workdir[1]


def test_pipeline_writes_results_metrics_and_events(full_run):
  wd, res = full_run
  assert set(res) >= {"clean_acc", "pgd_acc", "cw_acc", "n"}
  assert res["n"] == 512
  with open(os.path.join(wd, "eval.json")) as f:
    assert json.load(f)["pgd_acc"] == res["pgd_acc"]
  rows = [json.loads(ln) for ln in open(os.path.join(wd, "student", "metrics.jsonl"))]
  assert any("loss/kd_clean" in r for r in rows) and any("val/pgd_acc" in r for r in rows)
  acc = EventAccumulator(os.path.join(wd, "student", "tb"))
  acc.Reload()
  assert "loss" in acc.Tags()["scalars"]
  assert len(acc.Scalars("loss")) >= 2
  chunks = os.listdir(os.path.join(wd, "teacher_logits"))
  assert "done.json" in chunks


def test_eval_stage_reports_autoattack_with_checks_and_cli_resumes(full_copy):
  wd, res = full_copy
  assert res["autoattack_n"] == 64 and 0.0 <= res["autoattack_acc"] <= res["autoattack_clean_acc"]
  with open(os.path.join(wd, "eval_autoattack.json")) as f:
    aa = json.load(f)
  assert [a["attack"] for a in aa["per_attack"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
  assert aa["robust_acc"] == res["autoattack_acc"]
  names = {c["name"] for c in aa["checks"]}
  assert {
    "deterministic",
    "gradients",
    "eps_monotone",
    "more_iterations",
    "attacked_is_reported",
    "perturbation_bounds",
    "square_vs_whitebox",
  } <= names
  # The CLI with the same settings finds every point done and gives the same numbers.
  out = os.path.join(wd, "cli.json")
  r = run_python(
    "-m",
    "robust_distill.eval",
    f"--workdir={wd}",
    "--n=64",
    "--checks=false",
    f"--out={out}",
    "--opt=n_iter=4",
    "--opt=fab_iter=4",
    "--opt=n_queries=20",
    "--opt=n_target_classes=3",
    "--opt=chunk=4",  # the smoke config's settings, so that the saved state matches
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resuming from" in r.stdout and "robust accuracy" in r.stdout
  with open(out) as f:
    assert json.load(f)["robust_acc"] == aa["robust_acc"]


def test_training_cli_eval_stage_runs_autoattack(full_copy):
  wd, _ = full_copy
  # The training CLI imports the AutoAttack evaluator inside its eval stage: no flag clash.
  r = run_python(
    "-m",
    "robust_distill.main",
    "--config=configs/fmnist_ltd.py:smoke",
    f"--workdir={wd}",
    "--config.stages=eval",
    timeout=600,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert "AutoAttack (standard)" in r.stdout


def test_evaluate_cli_rejects_bad_input_before_compute(full_run):
  wd, _ = full_run
  r = run_python("-m", "robust_distill.eval", f"--workdir={wd}", "--attacks=apgd-ce,pgd")
  assert r.returncode != 0 and "valid" in r.stderr


def test_finished_stages_are_skipped(full_copy, capsys):
  wd, res = full_copy
  res2 = loop.run(smoke_config(stages="teacher,student"), wd)
  out = capsys.readouterr().out
  assert "[teacher] already trained" in out and "[student] already trained" in out
  assert res2 == {}


def test_interrupted_run_resumes_to_identical_parameters(full_run, tmp_path):
  wd_full, _ = full_run
  wd = str(tmp_path)
  cfg = smoke_config(stages="teacher")
  cfg.teacher.stop_at_step = 3
  with pytest.raises(loop.Interrupted):
    loop.run(cfg, wd)
  step, meta = _params(wd, "teacher")
  assert step == 3 and meta["data_iter"] is not None
  loop.run(smoke_config(stages="teacher"), wd)
  for a, b in zip(_leaves(wd), _leaves(wd_full)):
    np.testing.assert_array_equal(a, b)


def test_corrupt_latest_checkpoint_is_named_and_previous_one_used(full_run, tmp_path, capsys):
  wd_full, _ = full_run
  wd = str(tmp_path)
  cfg = smoke_config(stages="teacher")
  cfg.checkpoint.every_steps = 2
  cfg.teacher.stop_at_step = 5
  with pytest.raises(loop.Interrupted):
    loop.run(cfg, wd)
  ck = ckpt_lib.Checkpointer(os.path.join(wd, "teacher"))
  assert ck.steps() == [4, 5]
  ck.close()
  # Truncate the largest file of the latest checkpoint.
  d = os.path.join(wd, "teacher", "ckpt", "5")
  files = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]
  victim = max(files, key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)
  cfg.teacher.stop_at_step = 0
  capsys.readouterr()
  loop.run(cfg, wd)  # the same command, no flag: the corrupt one is named and moved aside
  out = capsys.readouterr().out
  warning = [ln for ln in out.splitlines() if ln.startswith("WARNING")]
  assert len(warning) == 1 and os.path.basename(victim) in warning[0], out
  assert "resumed from step 4" in out
  assert os.path.exists(os.path.join(wd, "teacher", "ckpt_corrupt", "5"))  # kept, not deleted
  for a, b in zip(_leaves(wd), _leaves(wd_full)):  # and the run ends as an uninterrupted one
    np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_with_step_and_term_and_keeps_checkpoint(tmp_path):
  wd = str(tmp_path)
  cfg = smoke_config(stages="teacher")
  cfg.checkpoint.every_steps = 1
  # A sane learning rate for 3 steps, then 1e30: the run diverges after good checkpoints exist.
  cfg.teacher.optim.update(lr=0.01, schedule="piecewise", decay_epochs=(3 / 7,), decay_factor=1e32)
  with pytest.raises(loop.NonFiniteLossError, match=r"step \d+: loss") as e:
    loop.run(cfg, wd)
  msg = str(e.value)
  assert "loss/" in msg and "intact" in msg and "\n" not in msg
  bad_step = int(msg.split("step ")[1].split(":")[0])
  ck = ckpt_lib.Checkpointer(os.path.join(wd, "teacher"))
  steps = ck.steps()
  assert steps and max(steps) < bad_step
  ck.verify(max(steps))
  ck.close()
  # The last checkpoint on disk is finite: parameters and logits.
  m = workdir_lib.load_stage_model(cfg, "teacher", wd, parallel.make_mesh(), which="latest")
  assert m.step == max(steps)
  assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(m.params))
  x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype(np.float32)
  assert np.isfinite(
    np.asarray(models.make_apply(m.graphdef)(m.params, m.stats, x, train=False)[0])
  ).all()


def test_checkpoint_saved_on_8_devices_restores_on_1(full_run):
  wd, _ = full_run
  code = f"""
import os, sys, numpy as np
sys.path.insert(0, {ROOT!r})
import jax
assert jax.device_count() == 1, jax.devices()
import robust_distill
m = robust_distill.restore({wd!r})
x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
print("LOGITS", np.asarray(m(x)).tolist())
print("STAGE", m.stage, len(m.history), m.config.student.loss.kd_clean)
"""
  out = run_python("-c", code, env=cli_env(), check=True, timeout=300).stdout
  logits = np.array(json.loads(out.split("LOGITS ")[1].splitlines()[0]))
  assert "STAGE student" in out
  here = robust_distill.restore(wd)
  x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(here(x)), logits, rtol=1e-5, atol=1e-5)


def test_garbage_manifest_and_corrupt_best_are_named_and_an_older_checkpoint_used(full_copy):
  wd, _ = full_copy
  cfg = smoke_config()
  # The teacher's best checkpoint truncated: a reader falls back to its latest one, and says so.
  best = os.path.join(wd, "teacher", "ckpt_best")
  files = [os.path.join(r, f) for r, _, fs in os.walk(best) for f in fs]
  victim = max(files, key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)
  said = []
  m = workdir_lib.load_stage_model(cfg, "teacher", wd, parallel.make_mesh(), log=said.append)
  assert len(said) == 1 and os.path.basename(victim) in said[0], said
  assert m.step == max(ckpt_lib.Checkpointer(os.path.join(wd, "teacher")).steps("latest"))
  # Garbage in a manifest: one line naming it; a resuming run moves that checkpoint aside.
  ck = ckpt_lib.Checkpointer(os.path.join(wd, "student"))
  step = ck.steps()[-1]
  manifest = os.path.join(wd, "student", "manifests", f"latest-{step}.json")
  with open(manifest, "w") as f:
    f.write("{not json")
  with pytest.raises(ckpt_lib.CheckpointCorruptError, match=os.path.basename(manifest)) as e:
    ck.verify(step)
  assert "\n" not in str(e.value)
  ck.close()


def test_cw_on_a_prefix_gives_the_figures_of_the_one_pass_evaluation(full_copy):
  # eval.cw_n: PGD over all test points, CW over the first cw_n only; every batch keeps its
  # random key, so each figure equals the one-pass evaluation's over the same points.
  wd, res = full_copy
  mesh = parallel.make_mesh()
  test = workdir_lib.test_split(smoke_config())
  split = smoke_config(stages="eval")
  split.eval.update(autoattack="", cw_n=128)
  got = evaluate_stage(split, "student", wd, test, mesh, log=lambda s: None)
  assert got["n"] == res["n"] == 512 and got["cw_n"] == 128
  assert (got["clean_acc"], got["pgd_acc"]) == (res["clean_acc"], res["pgd_acc"])
  prefix = smoke_config(stages="eval")
  prefix.eval.update(autoattack="", n=128)
  want = evaluate_stage(prefix, "student", wd, test, mesh, log=lambda s: None)
  assert got["cw_acc"] == want["cw_acc"] and want["cw_n"] == want["n"] == 128
  assert "(first 128 test points)" in report.table(got)


def test_the_metrics_writer_does_not_load_pytorch(tmp_path):
  # tensorboardX imports PyTorch whenever it is installed (as in the test set-up): a training
  # process would pay 1-2 s for it. The writer keeps it out, and PyTorch still imports after.
  code = (
    "import sys\nfrom robust_distill import metrics\n"
    f"w = metrics.Writer({str(tmp_path)!r}); w.write(1, {{'loss': 0.5}}); w.close()\n"
    "assert 'tensorboardX' in sys.modules and 'torch' not in sys.modules\n"
    "import torch; print(torch.tensor([1.0]).sum().item())\n"
  )
  out = run_python("-c", code)
  assert out.returncode == 0 and out.stdout.strip() == "1.0", out.stderr[-2000:]
  acc = EventAccumulator(str(tmp_path / "tb"))
  acc.Reload()
  assert [e.value for e in acc.Scalars("loss")] == [0.5]
