"""Resident memory of a host joining precomputed teacher logits to its batches, by split size.

    python bench/logit_join.py [--sizes=128116,1281167] [--classes=1000] [--hosts=4]
                               [--json=results/bench_logit_join.json]

For each split size N it writes a synthetic precompute result of N x classes float32 logits
(``rows.npy`` and ``rows_ids.npy``, as ``teacher.load`` leaves them; 5.1 GB for ImageNet's
1,281,167 examples) under ``--dir``, then, in a fresh process, joins logits to ``--batches``
global batches of 512 the way the input pipeline does: this host's rows (1 / ``--hosts`` of
each batch) looked up by example id in an epoch-wise shuffled order, read by
``data.logit_rows.LogitRows``. It reports the process's resident memory (VmRSS and its peak
VmHWM, from /proc) before and after, and, for comparison, the peak when the whole logit array
is loaded into memory, as the precompute did before (``np.load``). The files are removed after.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import benchutil
import numpy as np

from robust_distill.data.logit_rows import LogitRows, write_rows

MIB = 2.0**20


def memory() -> dict:
  """This process's VmRSS and VmHWM in MiB."""
  out = {}
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(("VmRSS", "VmHWM")):
        out[line.split(":")[0]] = int(line.split()[1]) / 1024
  return out


def write(d: str, n: int, classes: int) -> None:
  rng = np.random.default_rng(0)
  step = 10000
  parts = (
    rng.normal(size=(min(step, n - i), classes)).astype(np.float32) for i in range(0, n, step)
  )
  write_rows(os.path.join(d, "rows.npy"), parts, n=n)
  # Ids as a dataset gives them: a permutation of 0..N-1 (the chunks' order is not the id order).
  np.save(os.path.join(d, "rows_ids.npy"), rng.permutation(n).astype(np.int64))


def join(d: str, batches: int, hosts: int, whole: bool) -> dict:
  """One host's join over ``batches`` global batches of 512; returns memory before and after."""
  before = memory()
  ids = np.load(os.path.join(d, "rows_ids.npy"))
  if whole:
    logits = np.load(os.path.join(d, "rows.npy"))  # the old way: every row in memory
  else:
    logits = LogitRows(os.path.join(d, "rows.npy"))
  id_to_row = np.full(int(ids.max()) + 1, -1, np.int64)
  id_to_row[ids] = np.arange(len(ids))
  order = np.random.default_rng(1).permutation(len(ids))  # the epoch's shuffle
  t0, mine = time.perf_counter(), slice(0, 512 // hosts)
  checksum = 0.0
  for b in range(batches):
    batch_ids = order[b * 512 : (b + 1) * 512][mine]
    t = logits[id_to_row[batch_ids]]
    checksum += float(t[:, 0].sum())
  secs = time.perf_counter() - t0
  return {"before": before, "after": memory(), "seconds": secs, "checksum": checksum}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", default="128116,1281167")
  p.add_argument("--classes", type=int, default=1000)
  p.add_argument("--hosts", type=int, default=4)
  p.add_argument("--batches", type=int, default=500)
  p.add_argument("--dir", default="/tmp/robust_distill_logit_join")
  p.add_argument("--json", default="")
  p.add_argument("--_join", default="", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a._join:  # the child: one measurement in a fresh process
    print(json.dumps(join(a.dir, a.batches, a.hosts, a._join == "whole")))
    return
  rows = []
  for n in [int(s) for s in a.sizes.split(",")]:
    os.makedirs(a.dir, exist_ok=True)
    t0 = time.perf_counter()
    write(a.dir, n, a.classes)
    print(f"N={n}: wrote {n * a.classes * 4 / 2**30:.2f} GiB in {time.perf_counter() - t0:.0f} s")
    for how in ("rows", "whole"):
      cmd = [sys.executable, __file__, f"--dir={a.dir}", f"--batches={a.batches}",
             f"--hosts={a.hosts}", f"--_join={how}"]  # fmt: skip
      r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
      grew = r["after"]["VmHWM"] - r["before"]["VmRSS"]
      rows.append({"n": n, "join": how, "peak_growth_mib": round(grew, 1), **r})
      print(
        f"  {how:5s}: resident {r['before']['VmRSS']:.0f} MiB before, peak "
        f"{r['after']['VmHWM']:.0f} MiB (+{grew:.0f}); {a.batches} batches in {r['seconds']:.2f} s",
        flush=True,
      )
    for f in ("rows.npy", "rows_ids.npy"):
      os.remove(os.path.join(a.dir, f))
  lines = ["| examples | logits on disk (GiB) | join | peak resident growth (MiB) |"]
  lines.append("|---|---|---|---|")
  for r in rows:
    how = "row reads (LogitRows)" if r["join"] == "rows" else "whole array in memory (before)"
    gib = r["n"] * a.classes * 4 / 2**30
    lines.append(f"| {r['n']:,} | {gib:.2f} | {how} | {r['peak_growth_mib']:.0f} |")
  table = "\n".join(lines)
  print("\n" + table)
  if a.json:
    meta = benchutil.meta(
      argv,
      classes=a.classes,
      hosts=a.hosts,
      batches=a.batches,
      global_batch=512,
    )
    with open(a.json, "w") as f:
      json.dump({"meta": meta, "rows": rows, "markdown": table}, f, indent=1)


if __name__ == "__main__":
  main()
