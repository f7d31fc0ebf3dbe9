"""The PGD-10 training step with three forms of 2x2 max-pooling, beside the PyTorch reference.

    python bench/max_pool.py [--host_devices=2] [--batch=128] [--reps=15] [--json=PATH]

Times ``bench/pgd_step.py``'s JAX step (the library's jitted train step, small CNN) with the
model's pooling swapped for each of:

* ``reduce_window``: ``nnx.max_pool``, whose gradient is XLA's ``select_and_scatter``;
* ``reshape_max``: ``jnp.max`` over a reshaped window; its gradient counts the ties in each
  window and divides by the count;
* ``library``: ``robust_distill.models.layers.max_pool_2x2`` as it stands (the same forward as
  ``reshape_max``; a custom backward that sends each output's gradient to the first maximal
  input of its window, as ``reduce_window`` does).

All three and the PyTorch step of ``bench/pgd_step.py`` (the machine reference) run in one
process, in alternating rounds; the script prints the median of each and its ratio to the
library's form.
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgd_step  # noqa: E402  (configures the host devices before JAX starts)

from flax import nnx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import benchutil  # noqa: E402
from robust_distill.models import layers, small_cnn  # noqa: E402


def reshape_max(x):
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


FORMS = {
  "reduce_window": lambda x: nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2)),
  "reshape_max": reshape_max,
  "library": layers.max_pool_2x2,
}


def main():
  args = pgd_step.parse()
  x = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3) % 7.3
  for name, f in FORMS.items():  # same values, so the forms differ only in speed
    assert bool(jnp.all(f(x) == layers.max_pool_2x2(x))), name
  runs = {}
  for name, f in FORMS.items():
    small_cnn.max_pool_2x2 = f  # the model looks the function up when it is traced
    runs[name], jdesc = pgd_step.jax_step(args)
    runs[name]()  # compile while this form is in place
  small_cnn.max_pool_2x2 = layers.max_pool_2x2
  runs["pytorch"], tdesc = pgd_step.torch_step(args)
  for f in runs.values():
    f()
  times = {k: [] for k in runs}
  for _ in range(args.reps):
    for name, f in runs.items():
      t = time.perf_counter()
      f()
      times[name].append(time.perf_counter() - t)
  med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
  print(f"PGD-{args.steps} AT step, small CNN, batch {args.batch}, {jdesc}, median of {args.reps}:")
  for name, ms in med.items():
    print(f"  {name:14s} {ms:8.1f} ms   {ms / med['library']:.3f} x the library's form")
  print(f"  (pytorch is the machine reference: {tdesc})")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"median_ms": med, "times": times, "host_devices": args.host_devices,
                 "batch": args.batch, "pgd_steps": args.steps, "jax": jdesc, "torch": tdesc,
                 **benchutil.meta()}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
  main()
