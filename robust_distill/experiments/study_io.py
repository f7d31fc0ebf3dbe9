"""The study's contacts with the machine and the repository: the reference step and the load
beside it, the time of a run across interrupted invocations, the per-point AutoAttack outcomes
in a workdir, committing results as they land."""

import glob
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time

import numpy as np

from robust_distill import files
from robust_distill.experiments.study_plan import ROOT


def _busy_seconds() -> float:
  """CPU seconds this machine has spent busy since boot (all cores; Linux ``/proc/stat``)."""
  with open("/proc/stat") as f:
    v = [int(x) for x in f.readline().split()[1:]]
  return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def reference() -> dict:
  """The machine's reference: the median PyTorch PGD-10 step of ``bench/pgd_step.py`` (ms),
  measured now in a subprocess (``ms`` None if it cannot run), and ``other_cores``: the CPU
  that other processes used meanwhile, in cores (PyTorch's threads slow down several-fold
  beside other work, so a reference taken under load understates the machine)."""
  cmd = [sys.executable, os.path.join(ROOT, "bench", "pgd_step.py"), "--reference_only", "--reps=5"]
  t, busy = time.perf_counter(), _busy_seconds()
  own = resource.getrusage(resource.RUSAGE_CHILDREN)
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT).stdout
  except (OSError, subprocess.TimeoutExpired):
    out = ""
  ru = resource.getrusage(resource.RUSAGE_CHILDREN)
  child = ru.ru_utime + ru.ru_stime - own.ru_utime - own.ru_stime
  other = max(0.0, _busy_seconds() - busy - child) / max(time.perf_counter() - t, 1e-9)
  m = re.search(r"reference step .*: (\d+(?:\.\d+)?) ms", out)
  return {"ms": float(m.group(1)) if m else None, "other_cores": round(other, 2)}


def aa_points(wd: str) -> str:
  """The per-point AutoAttack outcome of a finished evaluation in ``wd``: a string of '1'
  (robust: clean and not broken) and '0', one character per evaluated point, in test order."""
  states = [p for p in glob.glob(os.path.join(wd, "autoattack", "state_*.npz")) if ".tmp" not in p]
  if not states:
    raise FileNotFoundError(f"no AutoAttack state in {wd}/autoattack")
  with np.load(max(states, key=os.path.getmtime)) as z:
    robust = (z["clean"] == 1) & (z["broken_by"] < 0)
  return "".join("1" if r else "0" for r in robust)


def git_commit_results(paths: list[str], message: str) -> bool:
  """Commits ``paths`` (only them) to the repository holding them; False if git refuses (not a
  repository, nothing changed)."""
  paths = [os.path.abspath(p) for p in paths]  # git runs in their directory, not the caller's
  root = os.path.dirname(paths[0])
  add = subprocess.run(["git", "add", "--", *paths], cwd=root, capture_output=True)
  if add.returncode:
    return False
  cmd = ["git", "commit", "-q", "-m", message, "--", *paths]
  return subprocess.run(cmd, cwd=root, capture_output=True).returncode == 0


HEARTBEAT_SECONDS = 30.0


def timed(fn, wd: str, ref: dict | None) -> tuple[float, list]:
  """Runs ``fn()``; returns the seconds it took, added to those of earlier interrupted
  invocations of the same work, and the segments: one ``{"seconds", "reference"}`` per
  invocation, ``reference`` being the reference step measured when that invocation started.

  The open segment is written to ``wd/study_time.json`` every ``HEARTBEAT_SECONDS`` while
  ``fn`` runs (marked ``"open": true``), so that an invocation killed at any instant, by any
  signal, keeps its time to within that interval; the next invocation counts it as it stood."""
  path = os.path.join(wd, "study_time.json")
  segments = []
  if os.path.exists(path):
    with open(path) as f:
      d = json.load(f)
    segments = [
      {k: v for k, v in g.items() if k != "open"}
      for g in (d.get("segments") or [{"seconds": d["seconds"], "reference": None}])
    ]
  t = time.perf_counter()
  os.makedirs(wd, exist_ok=True)

  def write(is_open: bool):
    now = segments + [{"seconds": time.perf_counter() - t, "reference": ref}]
    if is_open:
      now[-1]["open"] = True
    files.write_json(path, {"seconds": sum(g["seconds"] for g in now), "segments": now})
    return now

  stop = threading.Event()

  def heartbeat():
    while not stop.wait(HEARTBEAT_SECONDS):
      write(True)

  write(True)
  beat = threading.Thread(target=heartbeat, daemon=True)
  beat.start()
  try:
    fn()
  finally:
    stop.set()
    beat.join()
    segments = write(False)
  return sum(g["seconds"] for g in segments), segments
