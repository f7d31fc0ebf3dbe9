"""Attack throughput against the evaluation batch, at one host-device count, for a trained model.

    python bench/attack_sweep.py --workdir=DIR [--batches=128,256,512] [--host_devices=2]
                                 [--attacks=apgd-t,fab-t,square] [--json=FILE]

For each batch size and attack, the time per iteration of the evaluation's per-batch function
(``robust_distill.eval``'s ``Runner``, the same program an AutoAttack evaluation runs), as the
difference between a long and a short run after a warm-up (so that compilation, the attack's
start and its final check are not counted), and the image-iterations per second that follow.
Run it once per ``--host_devices`` value (XLA fixes the device count when JAX starts) to choose
the evaluation's batch and device count; the same-run PyTorch reference step
(``bench/pgd_step.py``) is printed first so that the figures can be scaled.

Benchmark on a quiet machine only.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from robust_distill import cpu_devices

cpu_devices.configure_from_argv()  # before JAX is imported: XLA reads the flag once

import benchutil
import pgd_step
import roofline

from robust_distill import parallel, workdir as workdir_lib


def parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True, help="a trained small-CNN workdir")
  p.add_argument("--batches", default="128,256,512")
  p.add_argument("--attacks", default="apgd-t,fab-t,square")
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--eps", type=float, default=0.1)
  p.add_argument("--skip_reference", action="store_true")
  p.add_argument("--json", default="")
  cpu_devices.add_argument(p)
  args = p.parse_args()
  try:
    args.batches = [int(b) for b in args.batches.split(",")]
  except ValueError:
    sys.exit(f"error: --batches={args.batches}: expected comma-separated whole numbers")
  if any(b <= 0 or b % 8 for b in args.batches):
    sys.exit(f"error: --batches={args.batches}: each must be a positive multiple of 8")
  args.attacks = args.attacks.split(",")
  bad = [a for a in args.attacks if a not in roofline.ATTACKS]
  if bad:
    sys.exit(f"error: --attacks: unknown {bad}; valid: {list(roofline.ATTACKS)}")
  if not os.path.isdir(args.workdir):
    sys.exit(f"error: --workdir={args.workdir}: no such directory")
  return args


def main():
  args = parse()
  mesh = parallel.make_mesh()
  ref = None
  if not args.skip_reference:
    ref = pgd_step.reference(argparse.Namespace(batch=128, steps=10, reps=5))
  _, sm, apply, test = roofline.load(args.workdir, mesh, max(args.batches))
  rows = []
  for b in args.batches:
    batch = roofline.eval_batch(test, b)
    for name in args.attacks:
      short, long = roofline.ITERS[name]
      t = roofline.per_iteration(
        lambda n, name=name, batch=batch: roofline.jax_attack_timer(
          apply, sm.params, sm.stats, batch, mesh, name, n, args.eps
        ),
        short,
        long,
        args.reps,
      )
      rows.append(dict(batch=b, attack=name, ms_per_iter=t * 1e3, img_iter_per_s=b / t))
      print(
        f"[sweep] {mesh.devices.size} devices, batch {b}, {name}: {t * 1e3:.2f} ms/iteration, "
        f"{b / t:.0f} image-iterations/s",
        flush=True,
      )
  if args.json:
    with open(args.json, "w") as f:
      out = dict(
        command=workdir_lib.command_line(),
        commit=benchutil.git_commit(),
        host_devices=mesh.devices.size,
        reference_ms=ref,
        rows=rows,
      )
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
