"""Bad config values fail before any compute with a message listing the valid names."""

import os
import subprocess
import sys

import pytest

from robust_distill import config as C

from conftest import ROOT, smoke_config


@pytest.mark.parametrize("key,value,match", [
    ("student.model", "resnet1000", "valid models"),
    ("dataset.name", "imagenet22k", "valid datasets"),
    ("student.attack.objective", "fgsm_magic", "valid"),
    ("student.attack.norm", "l3", "linf"),
    ("student.attack.bn_mode", "sometimes", "eval"),
    ("stages", "teacher,dance", "valid stages"),
    ("dataset.augment", "mixup", "valid"),
])
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
    C.validate(smoke_config(**{"dataset.augment": "crop_flip"}))
  with pytest.raises(ValueError, match="flip_aware"):
    C.validate(smoke_config(**{"dataset.augment": "flip"}))
  C.validate(smoke_config(**{"dataset.augment": "flip", "teacher.flip_aware": True}))
  C.validate(smoke_config(**{"dataset.augment": "crop_flip", "teacher.source": "online"}))


def test_kl_models_needs_online_teacher():
  with pytest.raises(ValueError, match="online"):
    C.validate(smoke_config(**{"student.attack.objective": "kl_models"}))


def test_cli_rejects_bad_value_before_compute(tmp_path):
  r = subprocess.run(
      [sys.executable, "-m", "robust_distill.main", "--config=configs/fmnist_ltd.py:smoke",
       f"--workdir={tmp_path}/w", "--config.student.model=resnet1000"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert "valid models" in r.stderr and "small_cnn" in r.stderr
  assert not os.path.exists(tmp_path / "w")


def test_cli_rejects_unknown_config_key(tmp_path):
  r = subprocess.run(
      [sys.executable, "-m", "robust_distill.main", "--config=configs/fmnist_ltd.py:smoke",
       f"--workdir={tmp_path}/w", "--config.student.optim.lrr=0.1"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0 and "lrr" in r.stderr
