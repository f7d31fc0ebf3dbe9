"""How the adversarial-training step scales from 1 to 8 CPU devices at a fixed global batch.

Each device count runs in its own process (the number of XLA host devices is fixed when JAX
starts), one after the other on the same machine; each times the library's jitted PGD-10
training step of the small CNN (``robust_distill.train.step``, batch sharded over a ``data``
mesh) and reports the median of ``--reps`` steps after warm-up. The result is the step time and
the speed-up over 1 device; on a 2-core CPU the devices share the two cores, so the gain comes
from XLA running the shards side by side (shared/docs/cpu-performance.md), not from more
hardware. On a GPU/TPU host the same command scales over real devices.

    python bench/scaling.py [--devices=1,2,4,8] [--batch=256] [--json=results/bench_scaling.json]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import benchutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, statistics, sys, time
import jax, numpy as np
from robust_distill import config as C, models, parallel
from robust_distill.train import step as S
batch, steps, reps = (int(a) for a in sys.argv[1:4])
s = C.stage(loss=dict(ce_adv=1.0), attack_cfg=C.attack(eps=0.1, step_size=0.025, steps=steps))
tx = S.make_optimizer(s.optim, 100)
graphdef, state = S.init_state(models.build("small_cnn"), tx)
mesh = parallel.make_mesh()
repl = parallel.replicated(mesh)
fn = jax.jit(S.make_train_step(s, graphdef, tx), donate_argnums=(0,), out_shardings=(repl, repl))
r = np.random.default_rng(0)
b = parallel.shard_batch({"image": r.integers(0, 255, (batch, 28, 28, 1), dtype=np.uint8),
                          "label": r.integers(0, 10, batch).astype(np.int32)}, mesh)
state = parallel.replicate(state, mesh)
t = time.perf_counter()
state, m = fn(state, b, jax.random.key(0), None); jax.block_until_ready(m)
compile_s = time.perf_counter() - t
for _ in range(2):
  state, m = fn(state, b, jax.random.key(0), None); jax.block_until_ready(m)
times = []
for i in range(reps):
  t = time.perf_counter()
  state, m = fn(state, b, jax.random.key(i), None); jax.block_until_ready(m)
  times.append(time.perf_counter() - t)
print(json.dumps({"devices": jax.device_count(), "ms": 1000 * statistics.median(times),
                  "first_step_s": compile_s}))
"""


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", default="1,2,4,8")
  p.add_argument("--batch", type=int, default=256, help="global batch (fixed)")
  p.add_argument("--steps", type=int, default=10, help="PGD iterations")
  p.add_argument("--reps", type=int, default=11)
  p.add_argument("--json", default="")
  a = p.parse_args(argv)
  rows = []
  for n in [int(v) for v in a.devices.split(",")]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    out = subprocess.run(
      [sys.executable, "-c", CHILD, str(a.batch), str(a.steps), str(a.reps)],
      env=env,
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["images_per_s"] = a.batch / (r["ms"] / 1000)
    rows.append(r)
    print(
      f"{n} device(s): {r['ms']:8.1f} ms/step  {r['images_per_s']:7.1f} img/s "
      f"(first step {r['first_step_s']:.1f} s)",
      flush=True,
    )
  base = rows[0]["ms"]
  for r in rows:
    r["speedup_vs_first"] = base / r["ms"]
  print(
    "\n| devices | ms / step | images / s | speed-up vs "
    f"{rows[0]['devices']} device(s) |\n|---|---|---|---|"
  )
  for r in rows:
    print(
      f"| {r['devices']} | {r['ms']:.1f} | {r['images_per_s']:.1f} | {r['speedup_vs_first']:.2f} |"
    )
  if a.json:
    meta = {
      "command": "python bench/scaling.py " + " ".join(argv or sys.argv[1:]),
      "date": time.strftime("%Y-%m-%d"),
      "commit": benchutil.git_commit(),
      "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}",
      "global_batch": a.batch,
      "pgd_steps": a.steps,
      "reps": a.reps,
    }
    with open(a.json, "w") as f:
      json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
