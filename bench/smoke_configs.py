"""Smoke-runs every paper-scale config at full size on this machine and records the times.

    python bench/smoke_configs.py [--json=results/smoke_configs.json] [CONFIG ...]

Each config runs as the README gives it, ``python -m robust_distill.main --config=FILE
--config.dataset=mock --config.steps=2`` (synthetic data of the dataset's shape; 2 steps per
training stage, 2 examples per device, one evaluation batch; the numbers mean nothing), in a
fresh workdir under a temporary folder, one after the other. Records the exit status, the wall
time (compilation of the full-size networks dominates it) and the evaluation's output.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import benchutil

CONFIGS = (
  "configs/imagenet_ltd.py",
  "configs/ltd_trades.py:cifar10",
  "configs/ltd_trades.py:cifar100",
  "configs/dgad.py:tiny_imagenet",
)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("configs", nargs="*", default=list(CONFIGS))
  p.add_argument("--json", default="")
  a = p.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for cfg in a.configs:
      name = os.path.splitext(os.path.basename(cfg.split(":")[0]))[0]
      cmd = [
        sys.executable,
        "-m",
        "robust_distill.main",
        f"--config={cfg}",
        "--config.dataset=mock",
        "--config.steps=2",
        f"--workdir={tmp}/{name}",
      ]
      print(f"[smoke] {' '.join(cmd[1:-1])}", flush=True)
      t0 = time.perf_counter()
      out = subprocess.run(cmd, cwd=benchutil.ROOT, capture_output=True, text=True)
      seconds = time.perf_counter() - t0
      eval_json = os.path.join(tmp, name, "eval.json")
      res = json.load(open(eval_json)) if os.path.exists(eval_json) else {}
      rows.append(
        {
          "config": cfg,
          "command": "python " + " ".join(cmd[1:-1]),
          "returncode": out.returncode,
          "seconds": round(seconds, 1),
          "evaluated_points": res.get("n"),
          "tail": out.stdout[-600:],
        }
      )
      print(f"[smoke] {cfg}: exit {out.returncode}, {seconds / 60:.1f} min", flush=True)
      if out.returncode:
        print(out.stdout[-3000:], out.stderr[-3000:], flush=True)
      if a.json:  # after every config, so that an interrupted run keeps what it measured
        meta = {
          "command": "python bench/smoke_configs.py " + " ".join(argv or sys.argv[1:]),
          "date": time.strftime("%Y-%m-%d"),
          "commit": benchutil.git_commit(),
          "machine": f"{os.cpu_count()} CPU cores",
        }
        with open(a.json, "w") as f:
          json.dump({"meta": meta, "rows": rows}, f, indent=1)
  return 1 if any(r["returncode"] for r in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
