"""PGD-10 adversarial-training step of the default small CNN: JAX (this library) vs PyTorch.

Both implementations run in this one process on the same machine, alternating rounds so that
machine noise hits both alike, and the script prints the median step time of each and the ratio
PyTorch time / JAX time (> 1 means JAX is faster).

    python bench/pgd_step.py [--host_devices=2] [--batch=128] [--steps=10] [--reps=7]
    python bench/pgd_step.py --reference_only --reps=5   # the PyTorch step alone (seconds)

The PyTorch step's time is the project's machine reference: every time quoted in the README
and docs has it beside it, measured on the same machine right after, so that a reader can scale
the time to their own machine (``launch/quickstart.sh`` prints it at its end).

The JAX step is exactly the library's training step (``robust_distill.train.step``) jitted over
a ``data`` mesh of ``--host_devices`` CPU devices; the PyTorch step is an eager implementation of
the same model (conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc10), the same PGD (uniform
start, sign steps, projection, clip) and the same SGD update, with ``torch.set_num_threads`` set
to the number of cores.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from robust_distill import cpu_devices

cpu_devices.configure_from_argv()  # before JAX is imported: XLA reads the flag once

import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robust_distill import config as C, models, parallel
from robust_distill.train import optim, step as S

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil  # noqa: E402

# What decides the instruction set each side uses: XLA's cap (--xla_cpu_max_isa in XLA_FLAGS),
# oneDNN's and ATen's. Capping both at AVX2 on an AVX-512 machine measures the AVX2 code paths.
ISA_ENV = ("XLA_FLAGS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def isa() -> dict:
  """The instruction-set settings in effect, and the CPU's model name."""
  cpu = ""
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
  return {"cpu": cpu, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
          **{k: os.environ.get(k, "") for k in ISA_ENV}}  # fmt: skip


def parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  cpu_devices.add_argument(p)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=10, help="PGD iterations")
  p.add_argument("--reps", type=int, default=21, help="timed steps per implementation")
  p.add_argument("--json", default="", help="also write the results here")
  p.add_argument(
    "--reference_only", action="store_true", help="time only the PyTorch step (the reference)"
  )
  return p.parse_args()


def jax_step(args):
  """Returns a no-argument callable running one jitted library train step."""
  s = C.stage(
    loss=dict(ce_adv=1.0), attack_cfg=C.attack(eps=0.1, step_size=0.025, steps=args.steps)
  )
  tx = optim.make_optimizer(s.optim, 100)
  graphdef, state = S.init_state(models.build("small_cnn"), tx)
  mesh = parallel.make_mesh()
  repl = parallel.replicated(mesh)
  fn = jax.jit(S.make_train_step(s, graphdef, tx), donate_argnums=(0,), out_shardings=(repl, repl))
  rng = np.random.default_rng(0)
  batch = parallel.shard_batch(
    {
      "image": rng.integers(0, 255, (args.batch, 28, 28, 1), dtype=np.uint8),
      "label": rng.integers(0, 10, args.batch).astype(np.int32),
    },
    mesh,
  )
  holder = {"state": parallel.replicate(state, mesh)}
  key = jax.random.key(0)

  def run():
    holder["state"], m = fn(holder["state"], batch, key, None)
    jax.block_until_ready(m)

  return run, f"{jax.device_count()} x {jax.devices()[0].platform}"


def torch_pgd(model, x, y, *, eps, alpha, steps):
  """L-inf PGD on the summed cross-entropy in PyTorch: uniform start, sign steps, projection
  and clipping (the same attack as the library's)."""
  xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
  for _ in range(steps):
    xa.requires_grad_(True)
    loss = F.cross_entropy(model(xa), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xa)
    xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
  return xa


def torch_step(args):
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)

  class SmallCNN(nn.Module):
    def __init__(self):
      super().__init__()
      self.c1, self.c2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 32, 3)
      self.c3, self.c4 = nn.Conv2d(32, 64, 3), nn.Conv2d(64, 64, 3)
      self.f1, self.f2, self.f3 = nn.Linear(64 * 16, 200), nn.Linear(200, 200), nn.Linear(200, 10)

    def forward(self, x):
      x = (x - 0.5) / 0.5
      x = F.max_pool2d(F.relu(self.c2(F.relu(self.c1(x)))), 2)
      x = F.max_pool2d(F.relu(self.c4(F.relu(self.c3(x)))), 2)
      x = F.relu(self.f2(F.relu(self.f1(x.flatten(1)))))
      return self.f3(x)

  model = SmallCNN()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.integers(0, 255, (args.batch, 1, 28, 28)).astype(np.float32) / 255)
  y = torch.from_numpy(rng.integers(0, 10, args.batch))
  eps, alpha = 0.1, 0.025

  def run():
    model.eval()
    xa = torch_pgd(model, x, y, eps=eps, alpha=alpha, steps=args.steps)
    model.train()
    opt.zero_grad()
    F.cross_entropy(model(xa), y).backward()
    opt.step()

  return run, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def reference(args):
  """Prints the median PyTorch step (the machine reference) and returns it in ms."""
  trun, tdesc = torch_step(args)
  trun()  # warm-up
  times = []
  for _ in range(args.reps):
    t = time.perf_counter()
    trun()
    times.append(time.perf_counter() - t)
  ms = statistics.median(times) * 1e3
  print(f"reference step (bench/pgd_step.py, PyTorch PGD-{args.steps} AT step, batch {args.batch}, "
        f"{tdesc}, median of {args.reps}): {ms:.0f} ms")  # fmt: skip
  return ms


def main():
  args = parse()
  if args.reference_only:
    reference(args)
    return
  jrun, jdesc = jax_step(args)
  trun, tdesc = torch_step(args)
  for f in (jrun, trun, jrun, trun):  # compile + warm-up
    f()
  times = {"jax": [], "torch": []}
  for _ in range(args.reps):
    for name, f in (("jax", jrun), ("torch", trun)):
      t = time.perf_counter()
      f()
      times[name].append(time.perf_counter() - t)
  med = {k: statistics.median(v) for k, v in times.items()}
  ratio = med["torch"] / med["jax"]
  print(f"PGD-{args.steps} AT step, small CNN, batch {args.batch}, median of {args.reps}:")
  print(f"  JAX    ({jdesc}): {med['jax'] * 1e3:8.1f} ms")
  print(f"  PyTorch ({tdesc}): {med['torch'] * 1e3:8.1f} ms")
  print(f"  speed ratio PyTorch time / JAX time = {ratio:.2f}")
  env = isa()
  print(f"  instruction sets: {env}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(
        {
          "jax_ms": med["jax"] * 1e3,
          "torch_ms": med["torch"] * 1e3,
          "ratio": ratio,
          "host_devices": args.host_devices,
          "batch": args.batch,
          "pgd_steps": args.steps,
          "jax": jdesc,
          "torch": tdesc,
          "times": times,
          "isa": env,
          **benchutil.meta(),
        },
        f,
        indent=1,
      )


if __name__ == "__main__":
  main()
