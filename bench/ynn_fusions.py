"""Which XLA:CPU operations to hand to YNNPACK: the small CNN's passes under each setting.

    python bench/ynn_fusions.py [--width=32] [--batch=64] [--host_devices=1] [--json=FILE]

For each value of ``--xla_cpu_experimental_ynn_fusion_type`` (jaxlib's default, ``dot`` only,
none), in a process of its own (XLA reads its flags once), times ten chained forward passes and
ten chained forward + input-gradient passes (the work of an attack iteration) of the small CNN,
median of 15 after compilation. ``robust_distill/cpu_devices.py`` chose ``dot`` from this.
Benchmark on a quiet machine only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from robust_distill import workdir as workdir_lib  # noqa: E402  (only the child runs JAX)

SETTINGS = {"jaxlib default": None, "dot": "dot", "none": ""}


def probe(width: int, batch: int, reps: int = 15) -> dict:
  """Runs in the child process: milliseconds for ten forward / ten attack passes."""
  # In the child only, after its XLA_FLAGS are set: XLA reads them when JAX starts.
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415

  from robust_distill import models  # noqa: PLC0415

  g, p, s = nnx.split(
    models.build("small_cnn", width=width, hidden=200 if width >= 32 else 100),
    nnx.Param,
    nnx.BatchStat,
  )
  apply = models.make_apply(g)
  x = jnp.asarray(np.random.default_rng(0).random((batch, 28, 28, 1), np.float32))
  y = jnp.zeros((batch,), jnp.int32)

  def logits(p, z):
    return apply(p, s, z, train=False)[0]

  def ce(z, p):
    return -jnp.sum(jax.nn.log_softmax(logits(p, z))[jnp.arange(batch), y])

  def chain(fn):
    def run(z, p):
      for _ in range(10):  # each pass depends on the last: nothing is skipped or overlapped
        z = z + 1e-6 * fn(z, p)
      return z

    return jax.jit(run)

  def timed(fn):
    jax.block_until_ready(fn(x, p))
    ts = []
    for _ in range(reps):
      t = time.perf_counter()
      jax.block_until_ready(fn(x, p))
      ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3

  fwd = chain(lambda z, p: jnp.broadcast_to(jnp.sum(logits(p, z)), z.shape))
  return {"forward_ms": timed(fwd), "attack_ms": timed(chain(jax.grad(ce)))}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--width", type=int, default=32)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--host_devices", type=int, default=1)
  p.add_argument("--json", default="")
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.width < 1 or args.batch < 1 or args.host_devices < 1:
    sys.exit("error: --width, --batch and --host_devices must be >= 1")
  if args.child is not None:
    print(json.dumps(probe(args.width, args.batch)))
    return
  rows = []
  for name, value in SETTINGS.items():
    flags = f"--xla_force_host_platform_device_count={args.host_devices}"
    if value is not None:
      flags += f" --xla_cpu_experimental_ynn_fusion_type={value}"
    env = {**os.environ, "XLA_FLAGS": flags, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
      [sys.executable, __file__, f"--width={args.width}", f"--batch={args.batch}", "--child=1"],
      env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    r = {"setting": name, **json.loads(out.strip().splitlines()[-1])}
    rows.append(r)
    print(
      f"[ynn] {name:>15}: 10 forward passes {r['forward_ms']:.1f} ms, 10 forward + input "
      f"gradient {r['attack_ms']:.1f} ms (small CNN width {args.width}, batch {args.batch})",
      flush=True,
    )
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"command": workdir_lib.command_line(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
