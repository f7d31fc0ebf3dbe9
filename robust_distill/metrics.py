"""Metrics to a JSON-lines file and TensorBoard event files (tensorboardX, no TensorFlow), plus
progress lines with images/s and ETA."""

import json
import math
import os
import sys
import time

import jax


def _summary_writer():
  """tensorboardX's ``SummaryWriter``, imported without PyTorch.

  tensorboardX imports PyTorch at import time whenever it is installed (to accept its tensors),
  which costs a process 1-2 s and loads a second threading runtime beside XLA's. Only floats are
  logged here, so while tensorboardX is imported ``import torch`` fails for it (unless PyTorch
  is already loaded); afterwards PyTorch imports normally. Deferred: only the process that
  writes logs loads tensorboardX."""
  block = "torch" not in sys.modules
  if block:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter  # noqa: PLC0415 (deferred; see the docstring)
  finally:
    if block:
      del sys.modules["torch"]
  return SummaryWriter


class Writer:
  """Appends ``{"step": s, **scalars}`` lines to ``metrics.jsonl`` and TensorBoard events.

  Only process 0 writes. Non-finite values are written as strings so the file stays valid JSON.
  """

  def __init__(self, logdir: str):
    self.active = jax.process_index() == 0
    self.path = os.path.join(logdir, "metrics.jsonl")
    self.tb = None
    if self.active:
      os.makedirs(logdir, exist_ok=True)
      self.tb = _summary_writer()(os.path.join(logdir, "tb"), flush_secs=10)

  def write(self, step: int, scalars: dict) -> None:
    if not self.active:
      return
    clean = {
      k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in scalars.items()
    }
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **clean}) + "\n")
    for k, v in scalars.items():
      self.tb.add_scalar(k, float(v), int(step))

  def close(self):
    if self.tb is not None:
      self.tb.flush()
      self.tb.close()


def read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def fmt_time(s: float) -> str:
  s = int(max(s, 0))
  return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
  """Throughput and ETA over a window of steps (excludes the first, compiling, step)."""

  def __init__(self, total_steps: int, images_per_step: int, start_step: int = 0):
    self.total, self.ips, self.start_step = total_steps, images_per_step, start_step
    self.t0, self.s0 = None, start_step

  def update(self, step: int) -> tuple[float, float]:
    """Returns (images/s, eta seconds) as of having completed ``step`` steps."""
    now = time.perf_counter()
    if self.t0 is None:  # first call after compilation: start the clock here
      self.t0, self.s0 = now, step
      return float("nan"), float("nan")
    rate = (step - self.s0) / max(now - self.t0, 1e-9)
    return rate * self.ips, (self.total - step) / max(rate, 1e-9)
