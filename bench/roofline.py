"""Roofline of this CPU: achieved GFLOP/s and fraction of the float32 peak of every attack and of
the training step, this library (JAX) against PyTorch, all in one run.

    python bench/roofline.py [--workdir=results/fmnist_study/teachers/robust] [--batch=256]
                             [--host_devices=2] [--json=FILE]

1. **Peak.** A 2048 x 2048 float32 matmul (``2 n^3`` FLOPs) in JAX (one device, and split over
   the host devices), NumPy and PyTorch; the best of them is the machine's attainable peak.
2. **FLOPs per image** of the model of ``--workdir`` (a trained small CNN: its attacks then
   behave as on a real evaluation, e.g. Square keeps querying), from XLA's cost analysis of the
   compiled programs on one device: a forward pass, an attack pass (forward + gradient with
   respect to the input) and a training pass (forward + gradient with respect to the weights).
3. **Workloads**, each timed per iteration on one batch of ``--batch`` test points, as the
   difference between a long and a short run (so that the start of an attack, its final check
   and dispatch latency are not counted), after a warm-up that compiles both:
   * APGD-CE, APGD-T (one target), FAB-T (one target), Square: ours through exactly the
     evaluation's per-batch function (``robust_distill.eval``'s ``Runner``, host-driven loops,
     batch sharded over ``--host_devices``); the original through the PyPI package
     ``pyautoattack`` (the authors' files) on the same model exported to PyTorch;
   * PGD-20 evaluation (ours: the evaluation's jitted PGD; PyTorch: an eager loop);
   * the PGD-10 adversarial-training step at batch 128 of ``bench/pgd_step.py`` (the default
     small CNN, as the machine reference; its FLOPs from that model's passes).
   Useful FLOPs per iteration are counted by passes (one attack pass per APGD / FAB / PGD
   iteration, one forward per Square query, ``steps`` attack passes plus one training pass per
   training step) times the per-image costs, the same count for both implementations.

The table prints milliseconds per iteration, GFLOP/s, the fraction of the peak and the ratio
PyTorch time / JAX time (> 1: ours is faster). Benchmark on a quiet machine only: under load
PyTorch's OpenMP threads slow down far more than XLA's.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from robust_distill import cpu_devices

cpu_devices.configure_from_argv()  # before JAX is imported: XLA reads the flag once

import benchutil
import jax
import jax.numpy as jnp
import numpy as np
import pgd_step
import torch
import torch_export
from flax import nnx

try:  # the original AutoAttack (the [torch] extra); only the PyTorch columns need it
  from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
  from pyautoattack.fab_pt import FABAttack_PT
  from pyautoattack.square import SquareAttack
except ImportError:
  APGDAttack = None

from robust_distill import models, parallel, workdir as workdir_lib
from robust_distill.models.flops import per_image_flops
from robust_distill.attacks import autoattack as aa
from robust_distill.eval import metrics
from robust_distill.eval.protocol import Runner

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
# (short, long) iteration counts of each timed pair; Square's queries are cheap (forward only).
ITERS = {
  "apgd-ce": (10, 30),
  "apgd-t": (10, 30),
  "fab-t": (10, 30),
  "square": (50, 250),
  "pgd-20": (20, 20),
  "train": (1, 1),
}


def parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", default="results/fmnist_study/teachers/robust")
  p.add_argument("--batch", type=int, default=256, help="points per attack batch")
  p.add_argument("--reps", type=int, default=3, help="timed repetitions (median)")
  p.add_argument("--eps", type=float, default=0.1)
  p.add_argument("--matmul", type=int, default=2048, help="side of the peak matmul")
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument("--json", default="", help="also write the results here")
  cpu_devices.add_argument(p)
  args = p.parse_args()
  if args.batch <= 0 or args.batch % 8:
    sys.exit(f"error: --batch={args.batch}: must be a positive multiple of 8")
  if not args.skip_torch and APGDAttack is None:
    sys.exit(
      "error: the PyTorch columns need pyautoattack: pip install -e '.[torch]' "
      "(or pass --skip_torch)"
    )
  if not os.path.isdir(args.workdir):
    sys.exit(f"error: --workdir={args.workdir}: no such directory (a trained small-CNN workdir)")
  return args


def median_time(fn, reps):
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def peak(n: int, reps: int, with_torch: bool) -> dict:
  """GFLOP/s of an ``n x n`` float32 matmul in each implementation."""
  flops = 2.0 * n**3
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
  out = {}
  dot = jax.jit(jnp.dot)
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  dot(ja, jb).block_until_ready()
  out["jax, 1 device"] = flops / median_time(lambda: dot(ja, jb).block_until_ready(), reps)
  mesh = parallel.make_mesh()
  if mesh.devices.size > 1 and n % mesh.devices.size == 0:
    sa = jax.device_put(a, parallel.batch_sharding(mesh))
    sb = parallel.replicate(jnp.asarray(b), mesh)
    dot(sa, sb).block_until_ready()
    t = median_time(lambda: dot(sa, sb).block_until_ready(), reps)
    out[f"jax, {mesh.devices.size} devices"] = flops / t
  np.dot(a, b)
  out["numpy"] = flops / median_time(lambda: np.dot(a, b), reps)
  if with_torch:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch.mm(ta, tb)
    out["pytorch"] = flops / median_time(lambda: torch.mm(ta, tb), reps)
  return {k: v / 1e9 for k, v in out.items()}


def load(workdir: str, mesh, n: int):
  """The trained small CNN of ``workdir`` (its restored run, stage model on ``mesh`` and apply
  function) and its first ``n`` test points; exits with a one-line error for another model."""
  restored = workdir_lib.restore(workdir)
  config, stage = restored.config, restored.stage
  if config[stage].model != "small_cnn":
    sys.exit(f"error: --workdir={workdir}: the benchmark exports small_cnn models only")
  sm = workdir_lib.load_stage_model(config, stage, workdir, mesh)
  apply = models.make_apply(sm.graphdef, config[stage].temperature)
  return restored, sm, apply, workdir_lib.test_split(config, 0, n)


def eval_batch(test: dict, n: int) -> dict:
  """The first ``n`` test points as one batch of the evaluation's per-batch function."""
  return {
    "image": test["image"][:n],
    "label": test["label"][:n].astype(np.int32),
    "valid": np.ones(n, bool),
    "idx": np.arange(n, dtype=np.int32),
  }


def jax_attack_timer(apply, params, stats, batch, mesh, name, iters, eps):
  """A callable running attack ``name`` with ``iters`` iterations (one target) on the batch
  through the evaluation's per-batch function."""
  key = {"apgd-ce": "n_iter", "apgd-t": "n_iter", "fab-t": "fab_iter", "square": "n_queries"}
  opts = aa.options("standard", n_target_classes=1, **{key[name]: iters})
  fn = Runner(apply, eps=eps, norm="linf", opts=opts, mesh=mesh).phase(name)
  sharded = parallel.shard_batch(batch, mesh)
  rng = jax.random.key(0)
  return lambda: jax.block_until_ready(fn(params, stats, sharded, rng))


def torch_attack_timer(model, x, y, name, iters, eps):
  common = dict(norm="Linf", eps=eps, seed=0, device="cpu")
  if name == "apgd-ce":
    atk = APGDAttack(model, n_iter=iters, loss="ce", n_restarts=1, **common)
  elif name == "apgd-t":
    atk = APGDAttack_targeted(model, n_iter=iters, n_target_classes=1, n_restarts=1, **common)
  elif name == "fab-t":
    atk = FABAttack_PT(
      model, n_iter=iters, n_target_classes=1, n_restarts=1, targeted=True, **common
    )
  else:
    atk = SquareAttack(
      model, n_queries=iters, p_init=0.8, n_restarts=1, resc_schedule=False, **common
    )
  return lambda: atk.perturb(x, y)


def per_iteration(make, short, long, reps):
  """Seconds per iteration: (time(long) - time(short)) / (long - short), both warmed up."""
  f_short, f_long = make(short), make(long)
  f_short()
  f_long()
  if long == short:
    return median_time(f_long, reps) / long
  return (median_time(f_long, reps) - median_time(f_short, reps)) / (long - short)


def torch_pgd_eval(model, x, y, steps, eps):
  def run():
    xa = pgd_step.torch_pgd(model, x, y, eps=eps, alpha=2.5 * eps / steps, steps=steps)
    with torch.no_grad():
      return (model(xa).argmax(1) == y).sum()

  return run


def main():
  args = parse()
  torch.set_num_threads(os.cpu_count() or 1)
  mesh = parallel.make_mesh()
  print(
    f"[roofline] {mesh.devices.size} host devices, torch {torch.__version__} with "
    f"{torch.get_num_threads()} threads, commit {benchutil.git_commit()}",
    flush=True,
  )
  pk = peak(args.matmul, args.reps, not args.skip_torch)
  best = max(pk.values())
  for k, v in pk.items():
    print(f"[roofline] peak, {args.matmul}^2 float32 matmul, {k}: {v:.1f} GFLOP/s", flush=True)

  restored, sm, apply, test = load(args.workdir, mesh, args.batch)
  config, stage = restored.config, restored.stage
  shape = test["image"].shape[1:]
  p1 = jax.device_get(sm.params)
  s1 = jax.device_get(sm.stats)
  fl = per_image_flops(apply, p1, s1, shape)
  print(
    f"[roofline] {config[stage].model} {dict(config[stage].model_kwargs)}: MFLOP per image "
    + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in fl.items()),
    flush=True,
  )
  bsz = len(test["label"])
  batch = eval_batch(test, bsz)
  x = test["image"].astype(np.float32) / 255.0
  tmodel = torch_export.small_cnn_to_torch(restored.module, restored.temperature)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  yt = torch.from_numpy(test["label"].astype(np.int64))

  rows = []

  def row(name, flops_per_iter, t_jax, t_torch, unit):
    rows.append(
      {
        "workload": name,
        "unit": unit,
        "gflop_per_iter": flops_per_iter / 1e9,
        "jax_ms": t_jax * 1e3,
        "torch_ms": None if t_torch is None else t_torch * 1e3,
      }
    )
    print(
      f"[roofline] {name}: JAX {t_jax * 1e3:.1f} ms/{unit}"
      + ("" if t_torch is None else f", PyTorch {t_torch * 1e3:.1f} ms/{unit}"),
      flush=True,
    )

  for name in ATTACKS:
    short, long = ITERS[name]
    per = fl["forward"] if name == "square" else fl["attack"]
    tj = per_iteration(
      lambda n, name=name: jax_attack_timer(
        apply, sm.params, sm.stats, batch, mesh, name, n, args.eps
      ),
      short,
      long,
      args.reps,
    )
    tt = None
    if not args.skip_torch:
      tt = per_iteration(
        lambda n, name=name: torch_attack_timer(tmodel, xt, yt, name, n, args.eps),
        short,
        long,
        args.reps,
      )
    row(name, per * bsz, tj, tt, "iteration")

  steps = 20
  fn = metrics.make_eval_fn(apply, eps=args.eps, pgd_steps=steps, cw_steps=0)
  sb = parallel.shard_batch(batch, mesh)
  run = lambda: jax.block_until_ready(fn(sm.params, sm.stats, sb, jax.random.key(0)))
  run()
  tj = median_time(run, args.reps)
  tt = None
  if not args.skip_torch:
    trun = torch_pgd_eval(tmodel, xt, yt, steps, args.eps)
    trun()
    tt = median_time(trun, args.reps)
  row(f"PGD-{steps} evaluation", (steps * fl["attack"] + 2 * fl["forward"]) * bsz, tj, tt, "batch")

  ns = argparse.Namespace(batch=128, steps=10, reps=args.reps)
  jrun, _ = pgd_step.jax_step(ns)
  jrun()
  jrun()
  tj = median_time(jrun, args.reps)
  tt = None
  if not args.skip_torch:
    trun, _ = pgd_step.torch_step(ns)
    trun()
    tt = median_time(trun, args.reps)
  # bench/pgd_step.py's model is the default small CNN: its own per-image costs.
  g, dp, ds = nnx.split(models.build("small_cnn"), nnx.Param, nnx.BatchStat)
  fd = per_image_flops(models.make_apply(g), dp, ds, (28, 28, 1))
  row(
    "PGD-10 training step (bench/pgd_step.py, batch 128)",
    (10 * fd["attack"] + fd["train"]) * 128,
    tj,
    tt,
    "step",
  )

  print(
    f"\nRoofline, float32 peak {best:.0f} GFLOP/s (best matmul above); batch {bsz}, "
    f"{mesh.devices.size} host devices; time per iteration (per batch for PGD, per step "
    "for training)"
  )
  print(
    "| workload | GFLOP | JAX ms | JAX GFLOP/s | JAX % peak | PyTorch ms | PyTorch GFLOP/s "
    "| PyTorch % peak | PyTorch / JAX time |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    gj = r["gflop_per_iter"] / (r["jax_ms"] / 1e3)
    r.update(jax_gflops=gj, jax_peak_frac=gj / best)
    cells = [
      r["workload"],
      f"{r['gflop_per_iter']:.2f}",
      f"{r['jax_ms']:.1f}",
      f"{gj:.0f}",
      f"{100 * gj / best:.0f}%",
    ]
    if r["torch_ms"] is not None:
      gt = r["gflop_per_iter"] / (r["torch_ms"] / 1e3)
      r.update(torch_gflops=gt, torch_peak_frac=gt / best, ratio=r["torch_ms"] / r["jax_ms"])
      cells += [f"{r['torch_ms']:.1f}", f"{gt:.0f}", f"{100 * gt / best:.0f}%", f"{r['ratio']:.2f}"]
    else:
      cells += ["-"] * 4
    print("| " + " | ".join(cells) + " |")
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(
        {
          "peak_gflops": pk,
          "per_image_flops": fl,
          "rows": rows,
          "batch": bsz,
          "host_devices": mesh.devices.size,
          "workdir": args.workdir,
          "git_commit": benchutil.git_commit(),
          "command": workdir_lib.command_line(),
        },
        f,
        indent=1,
      )


if __name__ == "__main__":
  main()
