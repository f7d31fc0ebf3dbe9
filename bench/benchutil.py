"""What the benchmarks record about the code they measured."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit() -> str:
  """The checkout's commit, with ``-dirty`` when its code (the package, configs or benchmarks)
  has uncommitted changes."""

  def git(*args):
    return subprocess.run(
      ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()

  try:
    rev = git("rev-parse", "--short", "HEAD")
    dirty = git(
      "status", "--porcelain", "--untracked-files=no", "--", "robust_distill", "configs", "bench"
    )
    return rev + ("-dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
