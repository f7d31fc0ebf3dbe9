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

Three more columns vary one setting each: ``model_kwargs.dtype='bfloat16'`` on an A100 (its bf16
peak; on a TPU the peak does not change, XLA already computes float32 convolutions in bf16
passes there); ``model_kwargs.remat='nothing'`` on a TPU v4 (every backward pass recomputes its
forward: 4 F instead of 3 F for each attack iteration and each trained input; 'dots' recomputes
only BatchNorm and ReLU, a negligible cost); and a precomputed teacher on a TPU v4 (the online
teacher's forwards leave the step, for the configs whose teacher sees clean inputs only).
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

from robust_distill import config as C
from robust_distill.models import flops
from robust_distill.data import pipeline
from robust_distill.losses import terms

# chip -> peak dense FLOP/s at the precision XLA uses for f32 by default (vendor data sheets).
CHIPS = {
  "TPU v4 (bf16 passes)": 275e12,
  "TPU v5e (bf16 passes)": 197e12,
  "A100 (TF32)": 156e12,
  "H100 SXM (TF32)": 495e12,
}
A100_BF16 = 312e12  # the bf16 column's peak
# (label, config file, setting): the paper configs (configs/<file>.py:<setting>).
CONFIGS = (
  ("CIFAR-10 PGD-AT, ResNet-18", "pgd_at", "cifar10"),
  ("CIFAR-10 TRADES, ResNet-18", "trades", "cifar10"),
  ("CIFAR-10 RSLAD, ResNet-18 <- WRN-34-10", "rslad", "cifar10"),
  ("CIFAR-10 AdaAD, ResNet-18 <- WRN-34-10", "adaad", "cifar10"),
  ("CIFAR-10 DGAD, ResNet-18 <- WRN-34-10", "dgad", "cifar10"),
  ("CIFAR-10 LTD-TRADES, WRN-34-10 <- WRN-34-10", "ltd_trades", "cifar10"),
  ("CIFAR-10 LTD-AWP, WRN-34-10 <- WRN-34-10", "ltd_awp", "cifar10"),
  ("CIFAR-10 AGKD-BML, WRN-28-10 <- WRN-28-10", "agkd_bml", "cifar10"),
  ("CIFAR-100 LTD-TRADES, WRN-34-10", "ltd_trades", "cifar100"),
  ("Tiny ImageNet DGAD, ResNet-18 <- PreAct-18", "dgad", "tiny_imagenet"),
  ("ImageNet LTD, ResNet-50 <- ResNet-50", "imagenet_ltd", ""),
)
TRAIN_SIZE = {"cifar10": 50000, "cifar100": 50000, "tiny_imagenet": 100000, "imagenet2012": 1281167}


def forward_flops(stage_cfg, shape, classes, cache) -> float:
  key = (stage_cfg.model, json.dumps(stage_cfg.model_kwargs.to_dict(), sort_keys=True), shape)
  if key not in cache:
    cache[key] = flops.forward_flops(stage_cfg.model, stage_cfg.model_kwargs, shape, classes)
  return cache[key]


def step_flops(cfg, f_s: float, f_t: float, *, remat: bool = False, precomputed: bool = False
               ) -> tuple[float, dict]:  # fmt: skip
  """FLOPs per training image of the student stage and the pass counts behind it; ``remat``:
  every backward pass recomputes its forward; ``precomputed``: the teacher's clean-input
  forwards come from a precompute (where its loss allows it)."""
  s = cfg.student
  k = s.attack.steps
  obj = s.attack.objective
  bwd = 4 if remat else 3  # forward + backward (2 forwards), + the recomputed forward
  attack = bwd * f_s * k + (bwd * f_t * k if obj == "kl_models" else 0.0)
  attack += f_s if obj in ("kl_self", "ce_confusing") else 0.0
  backward = terms.needs_backward(s.loss)
  if backward:
    attack += bwd * f_s * k
  inputs = terms.student_inputs(s.loss)
  update = bwd * f_s * len(inputs) * (2 if s.awp.gamma > 0 else 1)
  teacher = 0.0
  if precomputed and precomputable(cfg):
    pass
  elif C.needs_teacher(s) and cfg.teacher.source == "online":
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


def precomputable(cfg) -> bool:
  """Whether the student's teacher sees clean inputs only (its logits can be precomputed)."""
  s = cfg.student
  return (
    C.needs_teacher(s)
    and s.attack.objective != "kl_models"
    and not terms.teacher_inputs(s.loss)
    and not terms.teacher_feature_inputs(s.loss)
    and not terms.needs_backward(s.loss)
  )


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
    remat_image = step_flops(cfg, f_s, f_t, remat=True)[0]
    pre_image = step_flops(cfg, f_s, f_t, precomputed=True)[0] if precomputable(cfg) else None
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
      "a100_bf16_images_per_s": A100_BF16 * a.mfu / per_image,
      "remat_gflops_per_train_image": remat_image / 1e9,
      "v4_remat_images_per_s": CHIPS["TPU v4 (bf16 passes)"] * a.mfu / remat_image,
      "precomputed_gflops_per_train_image": None if pre_image is None else pre_image / 1e9,
      "v4_precomputed_images_per_s": (
        None if pre_image is None else CHIPS["TPU v4 (bf16 passes)"] * a.mfu / pre_image
      ),
    }
    rows.append(row)
    print(f"{label}: {per_image / 1e9:.1f} GFLOPs per training image", flush=True)
  lines = [
    "| config | GFLOPs / train image | "
    + " | ".join(f"img/s per {c}" for c in CHIPS)
    + " | student training on 8 A100 | A100, bf16 | v4, remat | v4, precomputed teacher |",
    "|---" * (len(CHIPS) + 6) + "|",
  ]
  for r in rows:
    ips = r["images_per_s_per_chip"]
    hours = r["epochs"] * r["images_per_epoch"] / (8 * ips["A100 (TF32)"]) / 3600
    lines.append(
      f"| {r['config']} | {r['gflops_per_train_image']:.1f} | "
      + " | ".join(f"{ips[c]:.0f}" for c in CHIPS)
      + f" | {hours:.1f} h | {r['a100_bf16_images_per_s']:.0f} | {r['v4_remat_images_per_s']:.0f}"
      + " | "
      + (
        "-"
        if r["v4_precomputed_images_per_s"] is None
        else f"{r['v4_precomputed_images_per_s']:.0f}"
      )
      + " |"
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
