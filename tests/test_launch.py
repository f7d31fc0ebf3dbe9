"""Launchers and host-device settings."""

import os
import subprocess

from conftest import ROOT, run_python


def test_local_launcher_dry_run_prints_command():
  out = subprocess.run(
    [
      "bash",
      os.path.join(ROOT, "launch", "local.sh"),
      "--dry-run",
      "--config=configs/fmnist_ltd.py",
      "--workdir=/tmp/x",
      "--config.student.optim.epochs=2",
    ],
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  assert "-m robust_distill.main" in out
  assert "--config=configs/fmnist_ltd.py" in out and "--config.student.optim.epochs=2" in out


def test_host_devices_configured_before_jax_import():
  code = (
    "import os; os.environ.pop('XLA_FLAGS', None)\n"
    "from robust_distill import cpu_devices\n"
    "assert cpu_devices.configure(cpu_devices.from_argv(['x', '--host_devices=4'])) == 4\n"
    "import jax; print(jax.device_count())\n"
    "assert cpu_devices.configure(2) == 4  # already set: unchanged\n"
  )
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = run_python("-c", code, env=env, check=True).stdout
  assert out.strip() == "4"


def test_configure_keeps_ynnpack_to_matrix_products_unless_xla_flags_choose():
  # jaxlib's default YNNPACK fusions make the CPU backward pass 2.5x slower (cpu_devices).
  code = (
    "import os, sys\n"
    "from robust_distill import cpu_devices\n"
    "os.environ['XLA_FLAGS'] = sys.argv[1]\n"
    "cpu_devices.configure(3)\n"
    "print(os.environ['XLA_FLAGS'])\n"
  )
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}

  def flags(given):
    return run_python("-c", code, given, env=env, check=True).stdout.split()

  assert sorted(flags("")) == [
    "--xla_cpu_experimental_ynn_fusion_type=dot",
    "--xla_force_host_platform_device_count=3",
  ]
  mine = "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise"
  assert sorted(flags(f"{mine} --xla_force_host_platform_device_count=5")) == [
    mine,
    "--xla_force_host_platform_device_count=5",
  ]


def test_package_import_does_not_import_jax():
  code = "import sys, robust_distill; print('jax' in sys.modules)"
  out = run_python("-c", code, check=True).stdout
  assert out.strip() == "False"


def test_entry_points_set_host_devices_before_jax():
  # The training CLI reads --host_devices from its command line before it imports JAX.
  code = (
    "import sys; sys.argv = ['main', '--host_devices=3']\n"
    "import robust_distill.main, jax; print(jax.device_count())\n"
  )
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = run_python("-c", code, env=env, check=True).stdout
  assert out.strip() == "3"
  bad = run_python("-m", "robust_distill.main", "--host_devices=0", "--config=x.py", env=env)
  assert bad.returncode != 0 and bad.stderr.strip() == "error: --host_devices=0: must be >= 1"


def test_tpu_pod_launcher_dry_run_prints_create_copy_install_run_and_logs():
  env = dict(
    os.environ,
    SLICE="rd-v4-32",
    ZONE="us-central2-b",
    ACCEL="v4-32",
    WORKDIR="gs://my-bucket/runs/ltd",
  )
  out = subprocess.run(
    [
      "bash",
      os.path.join(ROOT, "launch", "tpu_pod.sh"),
      "--dry-run",
      "--config=configs/imagenet_ltd.py",
      "--config.data.data_dir=gs://data/tfds",
      "--config.fsdp=4",
      "--config.data.workers=24",
      "--config.student.model_kwargs.remat=dots",
    ],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  lines = out.splitlines()
  create = next(ln for ln in lines if "tpu-vm create" in ln)
  assert "rd-v4-32" in create and "--accelerator-type=v4-32" in create
  assert "--zone=us-central2-b" in create
  assert any("tpu-vm scp" in ln and "--worker=all" in ln for ln in lines)  # copy to every worker
  install = next(ln for ln in lines if "pip" in ln and "tpu-vm ssh" in ln)
  assert "--worker=all" in install and "gcsfuse" in install and "my-bucket" in install
  run = next(ln for ln in lines if "robust_distill.main" in ln)
  assert "--worker=all" in run and "--config.distributed=True" in run
  assert "gcs/my-bucket/runs/ltd" in run and "gcs/data/tfds" in run  # GCS paths via gcsfuse
  for flag in ("--config.fsdp=4", "--config.data.workers=24", "model_kwargs.remat=dots"):
    assert flag in run, flag  # the pod's mesh, input workers and remat reach every worker
  assert "logs/tpu_pod-rd-v4-32-" in out  # where the streamed logs are kept
  # Missing variables are named before anything runs.
  bad = subprocess.run(
    [
      "bash",
      os.path.join(ROOT, "launch", "tpu_pod.sh"),
      "--dry-run",
      "--config=configs/imagenet_ltd.py",
    ],
    env={"PATH": os.environ["PATH"]},
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 2 and "SLICE ZONE ACCEL WORKDIR" in bad.stderr


def test_slurm_launcher_dry_run_takes_the_coordinator_from_slurm():
  env = dict(
    os.environ,
    DRY_RUN="1",
    SLURM_JOB_ID="4242",
    SLURM_JOB_NODELIST="gpu-a01,gpu-a02",
    SLURM_NTASKS="16",
  )
  args = [
    "bash",
    os.path.join(ROOT, "launch", "slurm.sbatch"),
    "--config=configs/rslad.py:cifar10",
    "--workdir=/shared/runs/rslad",
  ]
  out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
  assert "coordinator gpu-a01:16242" in out and "16 processes (gpu)" in out
  cmd = out.splitlines()[-1]
  assert cmd.startswith("srun --gpus-per-task=1")
  for piece in (
    "robust_distill.main",
    "--config=configs/rslad.py:cifar10",
    "--config.distributed=True",
    "--config.coordinator=gpu-a01:16242",
    "--config.num_processes=16",
    "--config.process_id=\\$SLURM_PROCID",
  ):
    assert piece in cmd, piece
  per_node = subprocess.run(
    args, env=dict(env, PER="node"), capture_output=True, text=True, check=True
  ).stdout
  assert "srun --ntasks-per-node=1" in per_node
