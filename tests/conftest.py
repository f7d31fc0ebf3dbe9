"""Test setup: 8 virtual CPU devices and YNNPACK kept to matrix products (as the entry points
do), XLA flags that compile for correctness rather than speed (all set before JAX is imported),
quiet logs, one uncapped persistent compilation cache per test session, shared helpers."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile

# The tests check what the compiled programs compute, never how fast they run (bench/ does), and
# most programs run once or twice, so compiling them for speed cost more than it saved: without
# LLVM's optimisation of the generated code and with XLA's older, simpler fusion emitters, the
# same suite, with the same assertions, takes about half the time. XLA's own (HLO) passes, the
# sharding and the numerics' semantics are unchanged.
COMPILE_FLAGS = (
  "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
  "--xla_cpu_use_fusion_emitters=false"
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from robust_distill import cpu_devices  # standard library only: JAX is not imported yet

DEVICE_FLAG = cpu_devices.XLA_DEVICE_FLAG
os.environ.setdefault(
  "XLA_FLAGS",
  f"{DEVICE_FLAG}=8 {cpu_devices.XLA_YNN_FLAG}={cpu_devices.YNN_FUSIONS} {COMPILE_FLAGS}",
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Most tests compile the same few programs (the smoke config's step, attacks, AutoAttack); one
# compilation cache for the session, created empty by the first process (pytest, or xdist's
# controller) and inherited by the workers and every CLI subprocess, compiles each once. It is
# removed at the end, so that every run of the suite starts from an empty cache.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="robust_distill_test_xla_")
# No size cap for it (it is deleted at the end): with a cap, JAX lists and stats every file in
# the cache at each write and takes a file lock at each read, and a session writes thousands
# of programs (this took the suite from 305 s to 226 s in pytest).
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", "-1")
# Likewise one directory for what the session's processes share (the trained workdir below).
_OWN_SHARED = "ROBUST_DISTILL_TEST_SHARED" not in os.environ
if _OWN_SHARED:
  os.environ["ROBUST_DISTILL_TEST_SHARED"] = tempfile.mkdtemp(prefix="robust_distill_test_")

import pytest

from robust_distill import compile_cache

compile_cache.configure()  # the entry points' cache settings, in that directory, before JAX

from robust_distill import config as config_lib


def run_python(*args, timeout=120, env=None, check=False):
  """``python ARGS`` from the repository root (a CLI module with ``-m``, a script, or code with
  ``-c``), its output captured as text: the ``subprocess.CompletedProcess``. ``env``: the
  process's environment (default: this one's); ``check``: raise if it fails."""
  return subprocess.run(
    [sys.executable, *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=check,
  )


def cli_env(*drop: str) -> dict:
  """The environment for a subprocess whose entry point chooses its own host-device count: this
  session's, with the device-count flag taken out of ``XLA_FLAGS`` (the rest, such as the
  compile flags above, kept, so that its programs are the in-process ones: same results, same
  compilation cache) and the variables in ``drop`` removed."""
  env = {k: v for k, v in os.environ.items() if k not in drop}
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG + "=")]
  env["XLA_FLAGS"] = " ".join(flags)
  return env


def smoke_config(**overrides):
  """The quickstart config shrunk to a seconds-long run on synthetic data."""
  c = config_lib.load(os.path.join(ROOT, "configs", "fmnist_ltd.py:smoke"))
  for k, v in overrides.items():
    node = c
    parts = k.split(".")
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = v
  return c


@pytest.fixture
def smoke():
  return smoke_config


@pytest.fixture(scope="session")
def trained_workdir():
  """``(workdir, eval results)`` of one uninterrupted smoke pipeline (teacher -> precompute ->
  student -> eval with AutoAttack and its checks), trained once per test session and shared by
  every test that only needs a trained run (the first xdist worker to need it trains it under a
  file lock, the other waits for it; the ``xdist_group("trained")`` marks would put these tests
  on one worker only under ``--dist loadgroup``, which made the suite slower, so tests/run.sh
  does not use it). Read it only: a test that writes copies it first (``shutil.copytree``)."""
  from robust_distill.train import loop  # noqa: PLC0415 (only the sessions that need it train)

  shared = os.environ["ROBUST_DISTILL_TEST_SHARED"]
  wd = os.path.join(shared, "trained")
  with open(os.path.join(shared, "trained.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(wd, "eval.json")):
      loop.run(smoke_config(), wd)
  with open(os.path.join(wd, "eval.json")) as f:
    return wd, json.load(f)


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
  if _OWN_SHARED:
    shutil.rmtree(os.environ["ROBUST_DISTILL_TEST_SHARED"], ignore_errors=True)
