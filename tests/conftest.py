"""Test setup: 8 virtual CPU devices (set before JAX is imported), quiet logs, shared helpers."""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from robust_distill import config as config_lib


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
