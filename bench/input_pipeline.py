"""Training-input throughput (images/s) against the number of worker processes.

    python bench/input_pipeline.py [--records=512] [--batch=64] [--batches=24] [--workers=0,1,2]
                                   [--json=results/bench_input_pipeline.json]

It writes ``--records`` synthetic JPEG images of ImageNet's typical size (500 x 375, quality 90,
smooth content plus noise: about 60 KB each) into an array_record file, one record per image
holding its label and JPEG bytes, and reads them through the project's lazy ImageNet reader
(``data.sources.LazySplit``: decode with PIL, random-resized crop to 224 and flip, per-example
seeds) and its training iterator (``data.pipeline.train_iterator``), as ``--config.data.workers``
sets it: 0 = in the training process, W = W worker processes (grain's ``mp_prefetch``). For each
worker count it times ``--batches`` host batches of ``--batch`` after 3 warm-up batches (which
absorb the workers' start-up) and prints images/s and the ratio to 1 worker.

Run it on a quiet machine: worker processes compete with anything else for the cores.
"""

import argparse
import io
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from array_record.python import array_record_module
import benchutil
import numpy as np
from PIL import Image

from robust_distill.data import pipeline
from robust_distill.data.sources import LazySplit


class JpegRecords:
  """Random access to ``label (4 bytes) + JPEG`` records of an array_record file, decoded to
  ``{"image": uint8 HWC, "label"}``; picklable (each process opens the file itself)."""

  def __init__(self, path: str):
    self.path, self._reader = path, None
    reader = array_record_module.ArrayRecordReader(path)
    self.n = reader.num_records()
    reader.close()

  def __len__(self) -> int:
    return self.n

  def __getstate__(self):
    return {"path": self.path, "n": self.n, "_reader": None}

  def __getitem__(self, i: int) -> dict:
    if self._reader is None:
      self._reader = array_record_module.ArrayRecordReader(self.path)
    rec = self._reader.read([int(i)])[0]
    image = np.asarray(Image.open(io.BytesIO(rec[4:])).convert("RGB"))
    return {"image": image, "label": int.from_bytes(rec[:4], "little")}


def write_records(path: str, n: int) -> float:
  """Writes ``n`` synthetic JPEG records; returns their mean size in bytes."""
  rng = np.random.default_rng(0)
  w = array_record_module.ArrayRecordWriter(path, "group_size:1")
  total = 0
  for i in range(n):
    low = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
    img = Image.fromarray(low).resize((500, 375), Image.BILINEAR)
    arr = np.clip(np.asarray(img, np.float32) + rng.normal(0, 8, (375, 500, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    rec = int(i % 1000).to_bytes(4, "little") + buf.getvalue()
    total += len(rec)
    w.write(rec)
  w.close()
  return total / n


def throughput(split, workers: int, batch: int, batches: int) -> float:
  it = pipeline.train_iterator(
    split, np.arange(len(split)), global_batch=batch, seed=0, augment="rrc_flip", workers=workers
  )
  for _ in range(3):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch / (time.perf_counter() - t0)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--records", type=int, default=512)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--batches", type=int, default=24)
  p.add_argument("--workers", default="0,1,2")
  p.add_argument("--dir", default="/tmp/robust_distill_input_bench")
  p.add_argument("--json", default="")
  a = p.parse_args(argv)
  os.makedirs(a.dir, exist_ok=True)
  path = os.path.join(a.dir, "jpeg.array_record")
  mean = write_records(path, a.records)
  print(f"{a.records} JPEG records, {mean / 1024:.0f} KiB each; {os.cpu_count()} CPUs")
  split = LazySplit(JpegRecords(path), 224)
  rows = []
  for w in [int(x) for x in a.workers.split(",")]:
    ips = throughput(split, w, a.batch, a.batches)
    rows.append({"workers": w, "images_per_s": round(ips, 1)})
    print(f"  workers={w}: {ips:.0f} images/s", flush=True)
  one = next((r["images_per_s"] for r in rows if r["workers"] == 1), None)
  lines = ["| workers | images/s | vs 1 worker |", "|---|---|---|"]
  for r in rows:
    ratio = f"{r['images_per_s'] / one:.2f}" if one else "-"
    lines.append(f"| {r['workers']} | {r['images_per_s']:.0f} | {ratio} |")
  table = "\n".join(lines)
  print("\n" + table)
  os.remove(path)
  if a.json:
    meta = benchutil.meta(
      argv,
      cpus=os.cpu_count(),
      records=a.records,
      mean_record_bytes=round(mean),
      host_batch=a.batch,
      batches=a.batches,
    )
    with open(a.json, "w") as f:
      json.dump({"meta": meta, "rows": rows, "markdown": table}, f, indent=1)


if __name__ == "__main__":
  main()
