"""Kills at chosen instants (SIGKILL through ``robust_distill.faults``, as a scheduler preempts)
and reruns of the same command: the final state equals an uninterrupted run's, bit for bit.

The default suite kills the training CLI during a save and right after a best save; the full
campaign (``-m slow``: a random step, during saves, after a best save, the last step, the
precompute, the evaluation) takes several minutes and runs with
``.venv/bin/python -m pytest -m slow tests/test_preemption.py``."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from robust_distill import faults, parallel, workdir as workdir_lib
from robust_distill.train import loop

from conftest import cli_env, run_python, smoke_config

# The quickstart's smoke config with a checkpoint every 2 steps and 2 validations per stage.
FLAGS = [
  "--config=configs/fmnist_ltd.py:smoke",
  "--config.checkpoint.every_steps=2",
  "--config.teacher.val_every_epochs=0.5",
  "--config.student.val_every_epochs=0.5",
]
OVERRIDES = {
  "checkpoint.every_steps": 2,
  "teacher.val_every_epochs": 0.5,
  "student.val_every_epochs": 0.5,
}


def _run(wd, *extra, kill_at=""):
  env = cli_env(faults.ENV)
  if kill_at:
    env[faults.ENV] = kill_at
  # 8 host devices, as the in-process reference runs (conftest): bitwise equality needs the
  # same sharding, and the CLI's own default is 2.
  return run_python(
    "-m", "robust_distill.main", *FLAGS, "--host_devices=8", f"--workdir={wd}", *extra,
    env=env, timeout=900,
  )  # fmt: skip


def _leaves(wd, stage, which):
  m = workdir_lib.load_stage_model(smoke_config(**OVERRIDES), stage, wd, parallel.make_mesh(),
                                   which=which, log=lambda s: None)  # fmt: skip
  return m.step, [np.asarray(x) for x in jax.tree.leaves((m.params, m.stats))]


def _assert_same_stage(wd, ref, stage):
  for which in ("latest", "best"):
    (s1, a), (s2, b) = _leaves(wd, stage, which), _leaves(ref, stage, which)
    assert s1 == s2, (stage, which)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)


def _kill_chain(wd, points, *extra):
  """Runs the same command once per kill point (each must die by SIGKILL there), then once to
  the end; returns the standard output of all the runs."""
  out = []
  for p in points:
    r = _run(wd, *extra, kill_at=p)
    assert r.returncode == -9, (p, r.returncode, r.stderr[-3000:])
    out.append(r.stdout)
  r = _run(wd, *extra)
  assert r.returncode == 0, r.stderr[-3000:]
  return "".join(out + [r.stdout])


def test_kills_during_a_save_and_after_a_best_save_resume_exactly(tmp_path):
  ref = str(tmp_path / "ref")
  loop.run(smoke_config(stages="teacher", **OVERRIDES), ref)
  wd = str(tmp_path / "killed")
  out = _kill_chain(
    wd,
    ["teacher:save:latest:2:committed", "teacher:save:best:4:done"],
    "--config.stages=teacher",
  )
  warnings = [ln for ln in out.splitlines() if ln.startswith("WARNING")]
  assert len(warnings) == 1 and "manifest" in warnings[0], out  # the unfinished save, named
  assert "already on disk: kept" in out  # the best checkpoint of step 4, not re-saved
  assert os.listdir(os.path.join(wd, "teacher", "ckpt_corrupt"))  # kept, not deleted
  _assert_same_stage(wd, ref, "teacher")


@pytest.mark.slow
def test_ten_kills_across_training_precompute_and_evaluation(tmp_path):
  ref = str(tmp_path / "ref")
  r = _run(ref)
  assert r.returncode == 0, r.stderr[-3000:]
  wd = str(tmp_path / "killed")
  # In an order where each instant is reached again by the resumed run.
  points = [
    "teacher:save:latest:2:committed",  # during a save: written, no manifest yet
    "teacher:step:3",  # a step between checkpoints
    "teacher:save:best:4:done",  # right after a best save
    "teacher:step:7",  # the last step
    "precompute:chunk:0",
    "precompute:chunk:1",
    "student:step:2",
    "student:save:best:4:done",
    "student:save:latest:6:committed",
    "autoattack:batch:1",  # the evaluation: after its first saved batch
  ]
  _kill_chain(wd, points)
  for stage in ("teacher", "student"):
    _assert_same_stage(wd, ref, stage)
  for name in ("eval.json", "eval_autoattack.json"):
    a, b = (json.load(open(os.path.join(d, name))) for d in (wd, ref))
    for k in ("clean_acc", "pgd_acc", "cw_acc", "robust_acc", "autoattack_acc"):
      assert a.get(k) == b.get(k), (name, k)


@pytest.mark.slow
def test_evaluation_cli_killed_resumes_to_the_same_numbers(tmp_path):
  ref = str(tmp_path / "ref")
  loop.run(smoke_config(stages="teacher,precompute,student", **OVERRIDES), ref)
  wd = str(tmp_path / "killed")
  shutil.copytree(ref, wd)
  args = ["--n=32", "--batch_size=16", "--checks=false", "--opt=n_iter=4", "--opt=fab_iter=4",
          "--opt=n_queries=20", "--opt=n_target_classes=3"]  # fmt: skip
  env = cli_env(faults.ENV)
  cmd = ["-m", "robust_distill.eval", *args]
  outs = []
  # 32 points in batches of 16: killed after the first saved batch, twice, then to the end.
  for d, kill in ((ref, ""), (wd, "autoattack:batch:1"), (wd, "autoattack:batch:1"), (wd, "")):
    e = dict(env, **({faults.ENV: kill} if kill else {}))
    r = run_python(*cmd, f"--workdir={d}", env=e, timeout=600)
    assert r.returncode == (-9 if kill else 0), r.stderr[-2000:]
    if not kill:
      outs.append(json.load(open(os.path.join(d, "eval_autoattack.json")))["robust_acc"])
  assert outs[0] == outs[1]
