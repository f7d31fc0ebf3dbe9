"""Projected (not measured) training throughput of the paper configs on accelerators.

    python bench/projected_throughput.py [--mfu=0.35] [--json=results/projected_throughput.json]

For each config, the arithmetic is:

* ``F_S``, ``F_T``: forward FLOPs per image of the student and the teacher, counted by XLA's cost
  analysis of the compiled forward pass (measured here, on CPU; exact for the graph, independent
  of the device);
* FLOPs per training image = the sum over the step's passes, a backward pass costing 2 forwards:
  each attack iteration is a forward and an input-gradient backward of the attacked function
  (3 F_S, plus 3 F_T when the attack differentiates through the teacher, AdaAD/DGAD), plus one
  forward for the attack's starting logits where it needs them (TRADES/LTD's clean target,
  AGKD-BML's most confusing class); AGKD-BML runs a second (backward) attack; the update does a
  forward and backward of the student on every input its loss uses (3 F_S each), AWP one more
  such pass for its proxy gradient, and the online teacher a forward on each input it sees;
* images/s per chip = peak FLOP/s x MFU / FLOPs per image, with the peak of the chip at the
  precision XLA uses for float32 convolutions by default (bf16 passes on TPU, TF32 on A100/H100)
  and an assumed model-FLOPs utilisation ``--mfu`` (0.35 is typical of ResNet training; nothing
  here measures it on an accelerator).
"""

import argparse
import importlib
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
sys.path.insert(0, ROOT)

import benchutil
from flax import nnx
import jax
import jax.numpy as jnp

from robust_distill import config as C, models
from robust_distill.data import pipeline
from robust_distill.losses import terms

# chip -> peak dense FLOP/s at the precision XLA uses for f32 by default (vendor data sheets).
CHIPS = {
  "TPU v4 (bf16 passes)": 275e12,
  "TPU v5e (bf16 passes)": 197e12,
  "A100 (TF32)": 156e12,
  "H100 SXM (TF32)": 495e12,
}
# (label, config file, argument): the paper configs.
CONFIGS = (
  ("CIFAR-10 PGD-AT, ResNet-18", "cifar10", "pgd_at"),
  ("CIFAR-10 TRADES, ResNet-18", "cifar10", "trades"),
  ("CIFAR-10 RSLAD, ResNet-18 <- WRN-34-10", "cifar10", "rslad"),
  ("CIFAR-10 AdaAD, ResNet-18 <- WRN-34-10", "cifar10", "adaad"),
  ("CIFAR-10 DGAD, ResNet-18 <- WRN-34-10", "cifar10", "dgad"),
  ("CIFAR-10 LTD-TRADES, WRN-34-10 <- WRN-34-10", "cifar10", "ltd_trades"),
  ("CIFAR-10 LTD-AWP, WRN-34-10 <- WRN-34-10", "cifar10", "ltd_awp"),
  ("CIFAR-10 AGKD-BML, WRN-28-10 <- WRN-28-10", "cifar10", "agkd_bml"),
  ("CIFAR-100 LTD-TRADES, WRN-34-10", "cifar100", "ltd_trades"),
  ("Tiny ImageNet DGAD, ResNet-18 <- PreAct-18", "tiny_imagenet", "dgad"),
  ("ImageNet LTD, ResNet-50 <- ResNet-50", "imagenet_ltd", ""),
)
TRAIN_SIZE = {"cifar10": 50000, "cifar100": 50000, "tiny_imagenet": 100000, "imagenet2012": 1281167}


def forward_flops(stage_cfg, shape, classes, cache) -> float:
  key = (stage_cfg.model, json.dumps(stage_cfg.model_kwargs.to_dict(), sort_keys=True), shape)
  if key not in cache:
    m = models.build_for_data(
      stage_cfg.model, stage_cfg.model_kwargs, num_classes=classes, image_shape=shape
    )
    m.eval()
    g, st = nnx.split(m)
    f = jax.jit(lambda st, x: nnx.merge(g, st)(x))
    ca = f.lower(st, jnp.zeros((1,) + tuple(shape))).compile().cost_analysis()
    cache[key] = float((ca[0] if isinstance(ca, list) else ca)["flops"])
  return cache[key]


def step_flops(cfg, f_s: float, f_t: float) -> tuple[float, dict]:
  """FLOPs per training image of the student stage and the pass counts behind it."""
  s = cfg.student
  k = s.attack.steps
  obj = s.attack.objective
  attack = 3 * f_s * k + (3 * f_t * k if obj == "kl_models" else 0.0)
  attack += f_s if obj in ("kl_self", "ce_confusing") else 0.0
  backward = terms.needs_backward(s.loss)
  if backward:
    attack += 3 * f_s * k
  inputs = terms.student_inputs(s.loss)
  update = 3 * f_s * len(inputs) * (2 if s.awp.gamma > 0 else 1)
  teacher = 0.0
  if C.needs_teacher(s) and cfg.teacher.source == "online":
    seen = {"clean"} | set(terms.teacher_inputs(s.loss))
    seen |= {"neg"} if backward else set()
    teacher = f_t * len(seen)
  total = attack + update + teacher
  return total, {
    "attack_steps": k,
    "inputs": sorted(inputs),
    "awp": s.awp.gamma > 0,
    "attack_gflops": attack / 1e9,
    "update_gflops": update / 1e9,
    "teacher_gflops": teacher / 1e9,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--mfu", type=float, default=0.35)
  p.add_argument("--json", default="")
  a = p.parse_args(argv)
  cache, rows = {}, []
  for label, mod, arg in CONFIGS:
    cfg = importlib.import_module(mod).get_config(arg)
    shape, classes = pipeline.geometry(cfg.dataset)
    f_s = forward_flops(cfg.student, shape, classes, cache)
    f_t = forward_flops(cfg.teacher, shape, classes, cache)
    per_image, detail = step_flops(cfg, f_s, f_t)
    epoch_images = TRAIN_SIZE[cfg.dataset] - cfg.data.val_size
    row = {
      "config": label,
      "file": f"configs/{mod}.py" + (f":{arg}" if arg else ""),
      "student_gflops_fwd": f_s / 1e9,
      "teacher_gflops_fwd": f_t / 1e9,
      "gflops_per_train_image": per_image / 1e9,
      **detail,
      "epochs": cfg.student.optim.epochs,
      "images_per_epoch": epoch_images,
      "images_per_s_per_chip": {c: peak * a.mfu / per_image for c, peak in CHIPS.items()},
    }
    rows.append(row)
    print(f"{label}: {per_image / 1e9:.1f} GFLOPs per training image", flush=True)
  lines = [
    "| config | GFLOPs / train image | "
    + " | ".join(f"img/s per {c}" for c in CHIPS)
    + " | student training on 8 A100 |",
    "|---" * (len(CHIPS) + 3) + "|",
  ]
  for r in rows:
    ips = r["images_per_s_per_chip"]
    hours = r["epochs"] * r["images_per_epoch"] / (8 * ips["A100 (TF32)"]) / 3600
    lines.append(
      f"| {r['config']} | {r['gflops_per_train_image']:.1f} | "
      + " | ".join(f"{ips[c]:.0f}" for c in CHIPS)
      + f" | {hours:.1f} h |"
    )
  table = "\n".join(lines)
  print(f"\nProjected at MFU {a.mfu} (not measured):\n\n{table}")
  if a.json:
    meta = {
      "command": "python bench/projected_throughput.py " + " ".join(argv or sys.argv[1:]),
      "date": time.strftime("%Y-%m-%d"),
      "commit": benchutil.git_commit(),
      "mfu": a.mfu,
      "chips_peak_flops": CHIPS,
      "note": "projected, not measured: FLOPs from XLA's cost analysis, assumed MFU",
    }
    with open(a.json, "w") as f:
      json.dump({"meta": meta, "rows": rows, "markdown": table}, f, indent=1)


if __name__ == "__main__":
  main()
