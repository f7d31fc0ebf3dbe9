"""Bad config values fail before any compute with a message listing the valid names."""

import os

import pytest

from robust_distill import config as C, main
from robust_distill.train import resume

from conftest import run_python, smoke_config


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("student.model", "resnet1000", "valid models"),
    ("dataset", "imagenet22k", "valid datasets"),
    ("student.attack.objective", "fgsm_magic", "valid"),
    ("student.attack.norm", "l3", "linf"),
    ("student.attack.bn_mode", "sometimes", "eval"),
    ("stages", "teacher,dance", "valid stages"),
    ("data.augment", "mixup", "valid"),
  ],
)
def test_unknown_names_rejected(key, value, match):
  with pytest.raises(ValueError, match=match):
    C.validate(smoke_config(**{key: value}))


def test_unknown_loss_term_rejected():
  c = smoke_config()
  with c.unlocked():
    c.student.loss.magic_term = 1.0
  with pytest.raises(ValueError, match="unknown loss term"):
    C.validate(c)


def test_all_zero_loss_rejected():
  with pytest.raises(ValueError, match="weight 0"):
    C.validate(smoke_config(**{"student.loss.kd_clean": 0.0, "student.loss.trades_kl": 0.0}))


def test_precomputed_teacher_with_random_crops_refused():
  with pytest.raises(ValueError, match="online"):
    C.validate(smoke_config(**{"data.augment": "crop_flip"}))
  with pytest.raises(ValueError, match="flip_aware"):
    C.validate(smoke_config(**{"data.augment": "flip"}))
  C.validate(smoke_config(**{"data.augment": "flip", "teacher.flip_aware": True}))
  C.validate(smoke_config(**{"data.augment": "crop_flip", "teacher.source": "online"}))


def test_kl_models_needs_online_teacher():
  with pytest.raises(ValueError, match="online"):
    C.validate(smoke_config(**{"student.attack.objective": "kl_models"}))


def test_cli_rejects_bad_value_before_compute(tmp_path):
  r = run_python(
    "-m",
    "robust_distill.main",
    "--config=configs/fmnist_ltd.py:smoke",
    f"--workdir={tmp_path}/w",
    "--config.student.model=resnet1000",
  )
  assert r.returncode != 0
  assert "valid models" in r.stderr and "small_cnn" in r.stderr
  assert not os.path.exists(tmp_path / "w")


def test_cli_rejects_unknown_config_key(tmp_path):
  r = run_python(
    "-m",
    "robust_distill.main",
    "--config=configs/fmnist_ltd.py:smoke",
    f"--workdir={tmp_path}/w",
    "--config.student.optim.lrr=0.1",
  )
  assert r.returncode != 0 and "lrr" in r.stderr


_PARSE_ONLY = """
from absl import app
from ml_collections import config_flags
cfg = config_flags.DEFINE_config_file("config")
app.run(lambda _: print(cfg.value.teacher.optim.epochs, cfg.value.student.optim.epochs,
                        cfg.value.student.val_every_epochs))
"""


@pytest.mark.parametrize("name", ["fmnist_ltd", "ltd_trades", "imagenet_ltd"])
def test_a_fractional_epoch_count_overrides_any_stage(name):
  """``--config.teacher.optim.epochs=1.5`` parses: the schedule's epochs are floats in every
  stage, whatever number a config file wrote (ml-collections refuses 1.5 for an int field).
  Parsed by absl and ml-collections as the CLI parses them, nothing run."""
  r = run_python(
    "-c",
    _PARSE_ONLY,
    f"--config=configs/{name}.py",
    "--config.teacher.optim.epochs=1.5",
    "--config.student.optim.epochs=2.5",
    "--config.student.val_every_epochs=0.5",
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.split() == ["1.5", "2.5", "0.5"]


def test_resume_refuses_other_settings(tmp_path):
  sdir = tmp_path / "student"
  sdir.mkdir()
  (sdir / "config.json").write_text(smoke_config().to_json())
  # A start that failed before its first checkpoint blocks nothing, whatever its settings.
  resume.check_resumable(smoke_config(**{"student.optim.lr": 0.5}), "student", str(sdir))
  (sdir / "ckpt").mkdir()
  (sdir / "ckpt" / "4").mkdir()  # a started stage: its settings are binding
  resume.check_resumable(smoke_config(), "student", str(sdir))  # same settings: fine
  resume.check_resumable(smoke_config(**{"student.val_every_epochs": 7.0}), "student", str(sdir))
  resume.check_resumable(smoke_config(**{"teacher.optim.lr": 0.5}), "student", str(sdir))
  changed = smoke_config(**{"student.optim.lr": 0.5, "student.batch_size": 48})
  with pytest.raises(resume.ConfigMismatch, match=r"student.optim.lr: stored .*, now 0.5"):
    resume.check_resumable(changed, "student", str(sdir))
  with pytest.raises(resume.ConfigMismatch, match="student.batch_size") as e:
    resume.check_resumable(changed, "student", str(sdir))
  assert e.value.stage_directory == str(sdir) and len(e.value.diffs) == 2
  assert "Use another --workdir" in str(e.value)
  # Where the files are and how many processes read them may change on resumption.
  moved = smoke_config(**{"data.workers": 2, "data.data_dir": "/elsewhere"})
  resume.check_resumable(moved, "student", str(sdir))
  with changed.unlocked():
    changed.checkpoint.allow_config_change = True
  resume.check_resumable(changed, "student", str(sdir))


def test_default_workdir():
  assert main.default_workdir("configs/imagenet_ltd.py", 0) == os.path.join("runs", "imagenet_ltd")
  assert main.default_workdir("configs/ltd_trades.py:cifar10", 2) == os.path.join(
    "runs", "ltd_trades_cifar10_steps2"
  )
