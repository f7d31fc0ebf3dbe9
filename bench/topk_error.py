"""Error of top-k teacher logits (replayed views' compact storage) against the full logits.

    python bench/topk_error.py [--workdir=results/fmnist_study/teachers/robust] [--n=10000]
                               [--json=results/bench_topk_error.json]

It restores a trained teacher (default: the Fashion-MNIST study's published robust teacher,
10 classes), computes its logits z on the first ``--n`` test images, stores them as the
precompute stores replayed views (``data.logit_rows.encode_topk``: float16, the top k and the
rest's log-sum-exp) and rebuilds them. For each k and teacher temperature tau it reports, over
the images, the mean and the largest KL(p || p_k) between the soft labels p = softmax(z / tau)
and p_k = softmax(z_k / tau), and the mean total variation |p - p_k|_1 / 2. The KD loss's
gradient with respect to the student's logits is (q - p) / tau, so storing p_k instead of p
moves that gradient by (p - p_k) / tau: its L1 norm is 2 TV / tau. k = C is float16 alone.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from robust_distill import cpu_devices  # noqa: E402, I001 (before JAX)

cpu_devices.configure()

import benchutil
import numpy as np

import robust_distill
from robust_distill.data import pipeline
from robust_distill.data.logit_rows import decode, encode_topk


def softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", default="results/fmnist_study/teachers/robust")
  p.add_argument("--n", type=int, default=10000)
  p.add_argument("--json", default="")
  a = p.parse_args(argv)
  model = robust_distill.restore(os.path.join(ROOT, a.workdir), stage="teacher")
  test = pipeline.load_split(model.config.dataset, "test")
  x = test["image"][: a.n].astype(np.float32) / 255.0
  z = np.concatenate([np.asarray(model(x[i : i + 500])) for i in range(0, len(x), 500)])
  classes = z.shape[1]
  rows = []
  for k in sorted({1, 2, 3, 5, classes}):
    zk = decode(encode_topk(z, 0 if k == classes else k), classes)
    for tau in (0.25, 1.0):
      pz, pk = softmax(z / tau), softmax(zk / tau)
      kl = np.sum(pz * (np.log(pz + 1e-30) - np.log(pk + 1e-30)), 1)
      tv = 0.5 * np.abs(pz - pk).sum(1)
      rows.append({"k": k, "tau": tau, "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
                   "tv_mean": float(tv.mean())})  # fmt: skip
      print(f"k={k:3d} tau={tau}: KL mean {kl.mean():.2e} max {kl.max():.2e}, TV {tv.mean():.2e}")
  lines = [
    f"| k (of {classes}) | tau | mean KL(p, p_k) | max KL | mean TV |",
    "|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
      f"| {r['k']} | {r['tau']} | {r['kl_mean']:.1e} | {r['kl_max']:.1e} | {r['tv_mean']:.1e} |"
    )
  table = "\n".join(lines)
  print("\n" + table)
  if a.json:
    meta = benchutil.meta(
      argv,
      teacher=a.workdir,
      images=int(len(z)),
      classes=classes,
    )
    with open(a.json, "w") as f:
      json.dump({"meta": meta, "rows": rows, "markdown": table}, f, indent=1)


if __name__ == "__main__":
  main()
