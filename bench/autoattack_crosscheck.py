"""Cross-check of this library's AutoAttack against the original implementation.

    python bench/autoattack_crosscheck.py --workdir=runs/quickstart [--n=1000] [--eps=0.1]

1. Restores the trained model of ``--workdir`` (the quickstart's LTD student by default), exports
   it to PyTorch (``bench/torch_export.py``) and checks that both give the same logits on the
   evaluated points (max abs difference <= 1e-4, else the script stops).
2. Runs this library's ``standard`` AutoAttack (``robust_distill.eval``, sharded over
   ``--host_devices`` CPU devices) and the original AutoAttack's ``standard`` version (the PyPI
   package ``pyautoattack``, the authors' APGD / FAB / Square files) on the same first ``--n``
   test points at the same eps, one after the other in this process, and times both.
3. Prints both robust accuracies, the per-attack breakdown (robust accuracy after each attack and
   cumulative time) and the wall-time ratio original / ours; ``--json`` also writes them.

Both run on the CPU: PyTorch with ``torch.set_num_threads(os.cpu_count())``, JAX with the batch
sharded over host devices. The random seeds differ between the two (exact agreement is not
possible: RNG streams differ); statistical agreement within 0.5 points is the target.
"""

import argparse
import json
import logging
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from robust_distill import cpu_devices

cpu_devices.configure_from_argv()  # before JAX is imported: XLA reads the flag once

import numpy as np
import torch
import torch_export

from robust_distill import workdir as workdir_lib
from robust_distill.eval import autoattack as aa_eval


def parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", default="runs/quickstart")
  p.add_argument("--n", type=int, default=1000)
  p.add_argument("--eps", type=float, default=0.1)
  cpu_devices.add_argument(p)
  p.add_argument(
    "--batch_size", type=int, default=0, help="ours (default: 256, rounded up to 32 x devices)"
  )
  p.add_argument("--torch_batch_size", type=int, default=250, help="original's bs (its default)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument("--skip_jax", action="store_true")
  p.add_argument("--json", default="", help="also write the results here")
  return p.parse_args()


class _Capture(logging.Handler):
  """Collects the original AutoAttack's per-attack log lines."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.after = []

  def emit(self, record):
    msg = record.getMessage()
    m = re.match(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)", msg)
    if m:
      self.after.append(
        {
          "attack": m.group(1).lower(),
          "robust_after": float(m.group(2)) / 100,
          "cumulative_seconds": float(m.group(3)),
        }
      )
    if (
      msg.startswith("initial accuracy")
      or msg.startswith("robust accuracy:")
      or (msg.startswith("max "))
    ):
      print(f"  [original] {msg}", flush=True)


def main():
  args = parse()
  torch.set_num_threads(os.cpu_count())
  restored = workdir_lib.restore(args.workdir)
  if restored.config[restored.stage].model != "small_cnn":
    sys.exit("the cross-check exports small_cnn models only")
  test = workdir_lib.test_split(restored.config, 0, args.n)
  x = test["image"].astype(np.float32) / 255.0
  y = test["label"].astype(np.int64)
  tmodel = torch_export.small_cnn_to_torch(restored.module, restored.temperature)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  yt = torch.from_numpy(y)
  with torch.no_grad():
    lt = np.concatenate([tmodel(xt[i : i + 500]).numpy() for i in range(0, len(y), 500)])
  lj = np.concatenate([np.asarray(restored(x[i : i + 500])) for i in range(0, len(y), 500)])
  diff = float(np.abs(lt - lj).max())
  print(
    f"[crosscheck] exported {restored.stage} ({restored.config.dataset}, "
    f"T={restored.temperature:g}): max |logit difference| PyTorch vs JAX over {len(y)} "
    f"points = {diff:.2e}",
    flush=True,
  )
  if diff > 1e-4:
    sys.exit("the exported model does not match (> 1e-4); not comparing attacks")
  out = {
    "n": args.n,
    "eps": args.eps,
    "workdir": args.workdir,
    "logit_max_abs_diff": diff,
    "cpu_count": os.cpu_count(),
    "torch_threads": torch.get_num_threads(),
    "command": workdir_lib.command_line(),
  }

  if not args.skip_jax:
    print("[crosscheck] ours (robust_distill.eval, standard)", flush=True)
    t = time.perf_counter()
    res = aa_eval.evaluate(
      args.workdir,
      attacks="standard",
      eps=args.eps,
      n=args.n,
      batch_size=args.batch_size,
      seed=args.seed,
      checks=False,
      fresh=True,
      out=os.path.join(args.workdir, "crosscheck_ours.json"),
      log=lambda s: print("  " + s, flush=True),
    )
    out["ours"] = {
      "seconds": time.perf_counter() - t,
      "clean_acc": res["clean_acc"],
      "robust_acc": res["robust_acc"],
      "per_attack": res["per_attack"],
      "devices": res["devices"],
      "batch_size": res["batch_size"],
      "git_commit": res["git_commit"],
    }

  if not args.skip_torch:
    from pyautoattack import AutoAttack  # noqa: PLC0415  (optional: the [torch] extra)

    print("[crosscheck] original (pyautoattack, standard)", flush=True)
    cap = _Capture()
    lg = logging.getLogger("auto-attack")
    lg.setLevel(logging.DEBUG)
    lg.addHandler(cap)
    adversary = AutoAttack(
      tmodel, norm="Linf", eps=args.eps, version="standard", device="cpu", seed=args.seed
    )
    t = time.perf_counter()
    x_adv, _ = adversary.run_standard_evaluation(xt, yt, batch_size=args.torch_batch_size)
    secs = time.perf_counter() - t
    with torch.no_grad():
      acc = float((tmodel(x_adv).argmax(1) == yt).float().mean())
      clean = float((tmodel(xt).argmax(1) == yt).float().mean())
    out["original"] = {
      "seconds": secs,
      "clean_acc": clean,
      "robust_acc": acc,
      "per_attack": cap.after,
      "batch_size": args.torch_batch_size,
      "package": "pyautoattack",
    }

  print("\n" + report(out), flush=True)
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)


def report(out: dict) -> str:
  lines = [
    f"AutoAttack standard, first {out['n']} test points, Linf eps={out['eps']:g} "
    f"(logits match to {out['logit_max_abs_diff']:.1e})"
  ]
  for who in ("ours", "original"):
    if who not in out:
      continue
    r = out[who]
    lines.append(
      f"{who:>9}: clean {100 * r['clean_acc']:.2f}%  robust {100 * r['robust_acc']:.2f}%"
      f"  wall {r['seconds']:.0f} s"
    )
    cum = 0.0
    for a in r["per_attack"]:
      if who == "ours":
        cum += a["seconds"]
        lines.append(
          f"           after {a['attack']:<8} {100 * a['robust_after']:6.2f}%  "
          f"(broke {a['broken']}, cumulative {cum:.0f} s)"
        )
      else:
        lines.append(
          f"           after {a['attack']:<8} {100 * a['robust_after']:6.2f}%  "
          f"(cumulative {a['cumulative_seconds']:.0f} s)"
        )
  if "ours" in out and "original" in out:
    o, t = out["ours"], out["original"]
    lines.append(
      f"robust accuracy difference (ours - original): "
      f"{100 * (o['robust_acc'] - t['robust_acc']):+.2f} points"
    )
    lines.append(f"speed ratio (original wall time / ours): {t['seconds'] / o['seconds']:.2f}")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
