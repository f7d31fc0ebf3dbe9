"""Bad inputs across the training pipeline, the evaluation, ``restore()``, the teacher import
and the command lines: each is refused with one line naming the value, before any compute, and
nothing is written."""

import math
import os

import pytest

from robust_distill import import_teacher, workdir as workdir_lib
from robust_distill.eval import autoattack as aa_eval
from robust_distill.train import loop

from conftest import ROOT, cli_env, run_python, smoke_config

INF, NAN = math.inf, math.nan

# (overrides of the smoke config, a substring the one-line message must contain)
CONFIG_CASES = [
  ({"student.model": "resnet1000"}, "student.model"),
  ({"dataset": "imagenet22k"}, "dataset"),
  ({"student.attack.objective": "fgsm_magic"}, "objective"),
  ({"student.attack.norm": "l3"}, "norm"),
  ({"student.attack.init": "zeros"}, "init"),
  ({"student.attack.bn_mode": "sometimes"}, "bn_mode"),
  ({"stages": "teacher,dance"}, "dance"),
  ({"data.augment": "mixup"}, "data.augment"),
  ({"student.attack.eps": 5.0}, "student.attack.eps=5.0"),
  ({"teacher.attack.eps": 1.5}, "teacher.attack.eps=1.5"),
  ({"student.attack.eps": -0.1}, "eps"),
  ({"student.attack.steps": -1}, "steps"),
  ({"student.attack.step_size": -0.1}, "step_size"),
  ({"student.attack.eps": 0.0}, "cannot move"),
  ({"student.attack.step_size": 0.0}, "cannot move"),
  ({"student.optim.lr": INF}, "student.optim.lr=inf"),
  ({"student.optim.lr": NAN}, "student.optim.lr=nan"),
  ({"teacher.optim.momentum": INF}, "teacher.optim.momentum=inf"),
  ({"student.optim.lr": 0.0}, "lr"),
  ({"student.optim.lr": -0.1}, "lr"),
  ({"student.optim.epochs": 0.0}, "epochs"),
  ({"student.optim.schedule": "wavy"}, "student.optim.schedule"),
  ({"student.optim.name": "lion"}, "student.optim.name"),
  ({"student.batch_size": 0}, "batch_size"),
  ({"student.batch_size": -8}, "batch_size"),
  ({"student.batch_size": 60}, "student.batch_size=60 does not divide"),
  ({"teacher.batch_size": 20}, "teacher.batch_size=20 does not divide"),
  ({"eval.batch_size": 100}, "eval.batch_size=100 does not divide"),
  ({"eval.autoattack_batch_size": 12}, "eval.autoattack_batch_size=12 does not divide"),
  ({"eval.batch_size": 0}, "eval.batch_size=0"),
  ({"eval.eps": 5.0}, "eval.eps=5.0"),
  ({"eval.eps": -3.0}, "eval.eps=-3.0"),
  ({"eval.n": 0}, "eval.n=0"),
  ({"eval.autoattack_n": -5}, "eval.autoattack_n=-5"),
  ({"eval.pgd_steps": -1}, "eval.pgd_steps=-1"),
  ({"eval.val_n": 0}, "eval.val_n=0"),
  ({"eval.autoattack": "apgd-ce,pgd"}, "valid"),
  ({"eval.autoattack_opts": "n_iters=5"}, "n_iters"),
  ({"eval.autoattack_opts": "n_iter"}, "KEY=VALUE"),
  ({"student.loss.kd_teacher_temperature": 0.0}, "kd_teacher_temperature"),
  ({"student.loss.kd_reduction": "sum"}, "kd_reduction"),
  ({"student.loss.kd_teacher_transform": "flip"}, "kd_teacher_transform"),
  ({"student.loss.trades_kl": INF}, "student.loss.trades_kl=inf"),
  ({"student.loss.label_smoothing": 1.5}, "label_smoothing"),
  ({"student.loss.bml_negative": "everywhere"}, "bml_negative"),
  ({"student.loss.dgad_map": 2}, "dgad_map"),
  ({"student.loss.kd_clean": 0.0, "student.loss.trades_kl": 0.0}, "weight 0"),
  ({"student.temperature": 0.0}, "temperatures"),
  ({"student.awp.gamma": -1.0}, "awp"),
  ({"student.init_from": "imagenet"}, "init_from"),
  ({"student.model_kwargs": {"width": -8, "hidden": 32}}, "student.model_kwargs"),
  ({"teacher.model_kwargs": {"width": 8, "depth": 3}}, "teacher.model_kwargs"),
  ({"student.model_kwargs": {"width": 8, "hidden": 32, "dtype": "bf16"}}, "'bf16'"),
  ({"teacher.model_kwargs": {"width": 8, "hidden": 32, "remat": "dots"}}, "remat='dots'"),
  ({"teacher.source": "psychic"}, "teacher.source"),
  ({"student.attack.objective": "kl_models"}, "online"),
  ({"data.augment": "crop_flip"}, "online"),
  ({"data.augment": "flip"}, "flip_aware"),
  ({"steps": -1}, "steps"),
  ({"checkpoint.every_steps": 0}, "every_steps"),
  ({"checkpoint.keep": 0}, "keep"),
  ({"log_every": 0}, "log_every"),
  ({"data.val_size": -5}, "val_size"),
  ({"data.workers": -1}, "data.workers=-1"),
  ({"fsdp": 0}, "fsdp=0"),
]


@pytest.mark.parametrize(
  "overrides,match", CONFIG_CASES, ids=[",".join(o) for o, _ in CONFIG_CASES]
)
def test_bad_config_values_fail_in_one_line_before_anything_is_written(tmp_path, overrides, match):
  wd = tmp_path / "w"
  with pytest.raises(ValueError) as e:
    loop.run(smoke_config(**overrides), str(wd))
  assert match in str(e.value) and "\n" not in str(e.value), str(e.value)
  assert not wd.exists()  # nothing computed, nothing written


def test_unknown_loss_field_fails_in_one_line(tmp_path):
  c = smoke_config()
  with c.unlocked():
    c.student.loss.magic_term = 1.0
  with pytest.raises(ValueError, match="magic_term") as e:
    loop.run(c, str(tmp_path / "w"))
  assert "\n" not in str(e.value)


def test_workdir_that_is_a_file_fails_in_one_line(tmp_path):
  f = tmp_path / "afile"
  f.write_text("x")
  with pytest.raises(OSError, match="is a file"):
    loop.run(smoke_config(), str(f))
  assert f.read_text() == "x"


@pytest.fixture(scope="module")
def config_only_workdir(tmp_path_factory):
  """A workdir whose student stage has its config.json and nothing else."""
  wd = tmp_path_factory.mktemp("cfgonly")
  (wd / "student").mkdir()
  (wd / "student" / "config.json").write_text(smoke_config().to_json())
  return str(wd)


EVAL_CASES = [
  (dict(eps=5.0), "--eps=5.0"),
  (dict(eps=-3.0), "--eps=-3.0"),
  (dict(n=-1), "--n=-1"),
  (dict(start=-2), "--start=-2"),
  (dict(batch_size=-1), "--batch_size=-1"),
  (dict(check_n=-1), "--check_n=-1"),
  (dict(seed=-1), "--seed=-1"),
  (dict(stage="bogus"), "--stage='bogus'"),
  (dict(attacks="apgd-ce,pgd"), "valid"),
  (dict(norm="l3"), "l3"),
  (dict(batch_size=12), "not divisible by 8"),
  (dict(opts={"n_iters": 5}), "n_iters"),
  (dict(start=10**6), "start=1000000"),
]


@pytest.mark.parametrize("kwargs,match", EVAL_CASES, ids=[str(k) for k, _ in EVAL_CASES])
def test_bad_evaluation_options_fail_in_one_line_before_compute(config_only_workdir, kwargs, match):
  with pytest.raises(ValueError) as e:
    aa_eval.evaluate(config_only_workdir, log=lambda s: None, **{"stage": "student", **kwargs})
  assert match in str(e.value) and "\n" not in str(e.value), str(e.value)
  assert sorted(os.listdir(config_only_workdir)) in (["student"], ["autoattack", "student"])


def test_evaluating_a_missing_workdir_fails_in_one_line(tmp_path):
  with pytest.raises(FileNotFoundError, match="no trained stage"):
    aa_eval.evaluate(str(tmp_path / "nothing"), log=lambda s: None)


@pytest.mark.parametrize(
  "kwargs,exc,match",
  [
    (dict(which="worst"), ValueError, "which"),
    (dict(stage="teacher"), FileNotFoundError, "no trained stage"),
    (dict(stage="student"), FileNotFoundError, "no checkpoint"),
  ],
)
def test_restore_bad_inputs(config_only_workdir, kwargs, exc, match):
  with pytest.raises(exc, match=match):
    workdir_lib.restore(config_only_workdir, **kwargs)


def test_restore_of_a_missing_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match="no trained stage"):
    workdir_lib.restore(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
  "argv,match",
  [
    (["--torch=missing.pt", f"--config={ROOT}/configs/rslad.py:cifar10"], "no PyTorch checkpoint"),
    (["--torch=missing.pt", f"--config={ROOT}/configs/nothing.py"], "no config file"),
    (["--torch=missing.pt", f"--config={ROOT}/configs/rslad.py:mars"], "unknown config argument"),
  ],
)
def test_import_teacher_bad_inputs(tmp_path, argv, match):
  with pytest.raises(SystemExit) as e:
    import_teacher.main(argv + [f"--workdir={tmp_path / 'w'}"])
  assert str(e.value).startswith("import_teacher: ") and match in str(e.value), str(e.value)
  assert "\n" not in str(e.value)


def _cli(*args):
  return run_python("-m", "robust_distill.main", *args, timeout=300, env=cli_env())


@pytest.mark.parametrize(
  "name,args,match",
  [
    ("missing config", ["--config=configs/nothing.py"], "nothing.py"),
    ("syntax error", ["--config={bad_syntax}"], "invalid syntax"),
    ("bad argument", ["--config=configs/fmnist_ltd.py:nope"], "unknown config argument 'nope'"),
    (
      "unknown field",
      ["--config=configs/fmnist_ltd.py:smoke", "--config.student.optim.lrr=1"],
      "no config field 'lrr'",
    ),  # fmt: skip
    (
      "read-only workdir",
      ["--config=configs/fmnist_ltd.py:smoke", "--workdir=/sys/rd_test"],
      "/sys/rd_test",
    ),  # fmt: skip
  ],
)
def test_training_cli_bad_inputs_are_one_line(tmp_path, name, args, match):
  (tmp_path / "bad_syntax.py").write_text("def get_config(:\n")
  (tmp_path / "no_get.py").write_text("X = 1\n")
  args = [
    a.format(bad_syntax=tmp_path / "bad_syntax.py", no_get=tmp_path / "no_get.py") for a in args
  ]
  if not any(a.startswith("--workdir") for a in args):
    args.append(f"--workdir={tmp_path / 'w'}")
  r = _cli(*args)
  lines = r.stderr.strip().splitlines()
  assert r.returncode != 0 and len(lines) == 1, (name, r.stderr[-2000:])
  assert lines[0].startswith("error: ") and match in lines[0], (name, lines)
  assert "Traceback" not in r.stderr and not (tmp_path / "w").exists()
