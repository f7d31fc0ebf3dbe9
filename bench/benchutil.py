"""What the benchmarks record about the code they measured."""

import os
import subprocess
import sys
import time

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


def meta(argv=None, **extra) -> dict:
  """What a benchmark's JSON records about its run: the command as a reader would retype it
  (``workdir.command_line``; ``argv`` are the arguments when ``main(argv)`` was called from
  code), the date, the commit (``git_commit``), and ``extra``."""
  from robust_distill.workdir import command_line  # noqa: PLC0415 (keeps this module light)

  args = sys.argv[:1] + list(argv) if argv is not None else None
  return {"command": command_line(args), "date": time.strftime("%Y-%m-%d"),
          "commit": git_commit(), **extra}  # fmt: skip
