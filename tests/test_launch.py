"""Launchers and host-device settings."""

import os
import subprocess
import sys

from conftest import ROOT


def test_local_launcher_dry_run_prints_command():
  out = subprocess.run(["bash", os.path.join(ROOT, "launch", "local.sh"), "--dry-run",
                        "--config=configs/fmnist_ltd.py", "--workdir=/tmp/x",
                        "--config.student.optim.epochs=2"],
                       capture_output=True, text=True, check=True).stdout
  assert "-m robust_distill.main" in out
  assert "--config=configs/fmnist_ltd.py" in out and "--config.student.optim.epochs=2" in out


def test_host_devices_configured_before_jax_import():
  code = ("import os; os.environ.pop('XLA_FLAGS', None)\n"
          "from robust_distill import hostdevices\n"
          "assert hostdevices.configure(4) == 4\n"
          "import jax; print(jax.device_count())\n"
          "assert hostdevices.configure(2) == 4  # already set: unchanged\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, cwd=ROOT).stdout
  assert out.strip() == "4"


def test_package_import_does_not_import_jax():
  code = "import sys, robust_distill, robust_distill.main; print('jax' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=ROOT).stdout
  assert out.strip() == "False"
