"""Memory of the compiled training step with and without bf16 compute and rematerialisation.

    python bench/memory.py [--batch=128] [--json=results/bench_memory.json]

XLA compiles (and does not run) the LTD student step of the largest CIFAR pairing in the papers'
settings: a ResNet-18 student distilled from a WideResNet-34-20 teacher that runs online
(``configs/ltd_trades.py:cifar10`` with those two models), batch 128 of 32x32x3 images, a
10-step training attack (rolled, as on accelerators), for each model ``dtype`` (float32,
bfloat16) and ``remat`` policy (none, dots, nothing). It prints what
``compiled.memory_analysis()`` reports: the temporary buffers (activations kept for the backward
pass, attack and optimizer temporaries) and the arguments (parameters, optimizer state, batch,
teacher).

The programs are compiled for this machine's CPU backend, so those byte counts are XLA:CPU's
buffer assignment, and XLA:CPU's scheduler is not memory-aware: it may run a rematerialised
forward early and keep its result, as if there were no remat. So the benchmark also counts, for
each variant, what remat and bf16 act on whatever the backend: the residuals that one train-mode
forward of the student saves for its backward pass (``jax``'s ``saved_residuals``, parameters
excluded), at the same batch. The LTD update runs two such forwards (clean and adversarial).

A second table gives the bytes of model state one device holds on a ``(data, fsdp)`` mesh
(``--config.fsdp``) for fsdp = 1, 2, 4, 8: the student's parameters, SGD momentum and BatchNorm
statistics, and the online teacher's parameters and statistics, placed by
``parallel.state_sharding``. These are exact (shapes and the placement rule), not measured.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import benchutil
from flax import nnx
import jax
from jax._src import ad_checkpoint
import jax.numpy as jnp

from robust_distill import config as C, models, parallel
from robust_distill.train import optim, step as step_lib

GIB = 2.0**30


def compile_step(batch: int, dtype: str, remat: str, student: str, teacher: str):
  """Compiles the LTD step; returns (memory stats, seconds to compile)."""
  c = C.load(os.path.join(ROOT, "configs", "ltd_trades.py:cifar10"))
  s = c.student
  s.model, s.attack.unroll = student, 1
  kw = dict(num_classes=10, dtype=dtype)
  remat_kw = {} if student == "small_cnn" else dict(remat=remat)
  tx = optim.make_optimizer(s.optim, 390)
  graphdef, state = step_lib.init_state(models.build(s.model, **kw, **remat_kw), tx)
  abstract = nnx.eval_shape(lambda: models.build(teacher, **kw, remat=remat))
  tg, tp, ts = nnx.split(abstract, nnx.Param, nnx.BatchStat)
  fn = jax.jit(step_lib.make_train_step(s, graphdef, tx, teacher_graphdef=tg), donate_argnums=0)
  spec = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt)
  batch_spec = {"image": spec((batch, 32, 32, 3), jnp.uint8), "label": spec((batch,), jnp.int32)}
  state_spec = jax.tree.map(lambda a: spec(a.shape, a.dtype), state)
  t0 = time.perf_counter()
  compiled = fn.lower(state_spec, batch_spec, jax.random.key(0), (tp, ts)).compile()
  return compiled.memory_analysis(), time.perf_counter() - t0


def residual_bytes(batch: int, dtype: str, remat: str, student: str) -> int:
  """Bytes one train-mode forward of ``student`` saves for the parameter gradient (parameters
  and inputs excluded)."""
  kw = {} if student == "small_cnn" else dict(remat=remat)
  m = models.build(student, num_classes=10, dtype=dtype, **kw)
  g, params, stats = nnx.split(m, nnx.Param, nnx.BatchStat)
  apply = models.make_apply(g)
  x = jnp.zeros((batch, 32, 32, 3), jnp.float32)
  loss = lambda p: jnp.sum(apply(p, stats, x, train=True)[0])
  res = ad_checkpoint.saved_residuals(loss, params)
  return sum(a.size * a.dtype.itemsize for a, why in res if not why.startswith("from the argument"))


FSDP_SIZES = (1, 2, 4, 8)


def state_bytes(student: str, teacher: str, classes: int) -> list[dict]:
  """Per-device bytes of the student's training state and the teacher's variables, per fsdp."""
  s = C.load(os.path.join(ROOT, "configs", "ltd_trades.py:cifar10")).student
  tx = optim.make_optimizer(s.optim, 390)

  def student_state():
    return step_lib.init_state(models.build(student, num_classes=classes), tx)[1]

  st = jax.eval_shape(student_state)
  tvars = nnx.split(nnx.eval_shape(lambda: models.build(teacher, num_classes=classes)))[1]
  return [
    {
      "fsdp": f,
      "student_state_bytes": parallel.bytes_per_device(st, f),
      "teacher_bytes": parallel.bytes_per_device(tvars, f),
    }
    for f in FSDP_SIZES
  ]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--student", default="resnet18")
  p.add_argument("--teacher", default="wrn34_20")
  p.add_argument("--json", default="")
  a = p.parse_args(argv)
  rows = []
  print(f"LTD step, {a.student} <- {a.teacher} (online), batch {a.batch}, 10-step attack; XLA:CPU")
  for dtype in ("float32", "bfloat16"):
    for remat in ("none", "dots", "nothing"):
      m, secs = compile_step(a.batch, dtype, remat, a.student, a.teacher)
      row = {
        "dtype": dtype,
        "remat": remat,
        "student_residual_bytes": int(residual_bytes(a.batch, dtype, remat, a.student)),
        "temp_bytes": int(m.temp_size_in_bytes),
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "compile_seconds": round(secs, 1),
      }
      rows.append(row)
      print(
        f"  {dtype:9s} remat={remat:8s} student residuals per forward "
        f"{row['student_residual_bytes'] / GIB:5.2f} GiB, "
        f"temporaries {row['temp_bytes'] / GIB:6.2f} GiB, "
        f"arguments {row['argument_bytes'] / GIB:5.2f} GiB (compiled in {secs:.0f} s)",
        flush=True,
      )
  base, res0 = rows[0]["temp_bytes"], rows[0]["student_residual_bytes"]
  lines = [
    "| dtype | remat | student residuals per forward (GiB) | vs float32, no remat "
    "| XLA:CPU temporaries (GiB) | vs float32, no remat | arguments (GiB) |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
      f"| {r['dtype']} | {r['remat']} | {r['student_residual_bytes'] / GIB:.3f} | "
      f"{r['student_residual_bytes'] / res0:.2f} | {r['temp_bytes'] / GIB:.2f} | "
      f"{r['temp_bytes'] / base:.2f} | {r['argument_bytes'] / GIB:.2f} |"
    )
  table = "\n".join(lines)
  print("\n" + table)
  state_rows = []
  for student, teacher, classes in ((a.student, a.teacher, 10), ("resnet50", "resnet50", 1000)):
    for r in state_bytes(student, teacher, classes):
      state_rows.append({"student": student, "teacher": teacher, **r})
  fsdp_lines = [
    "| student <- teacher | fsdp | student state per device (GiB) | teacher per device (GiB) |",
    "|---|---|---|---|",
  ]
  for r in state_rows:
    fsdp_lines.append(
      f"| {r['student']} <- {r['teacher']} | {r['fsdp']} | "
      f"{r['student_state_bytes'] / GIB:.3f} | {r['teacher_bytes'] / GIB:.3f} |"
    )
  fsdp_table = "\n".join(fsdp_lines)
  print("\n" + fsdp_table)
  if a.json:
    meta = benchutil.meta(
      argv,
      backend=jax.default_backend(),
      step=f"LTD (ltd_trades.py:cifar10), {a.student} <- {a.teacher} online, batch {a.batch}",
      note="compiled, not run: XLA's buffer assignment for this backend",
    )
    with open(a.json, "w") as f:
      json.dump(
        {
          "meta": meta,
          "rows": rows,
          "markdown": table,
          "fsdp_rows": state_rows,
          "fsdp_markdown": fsdp_table,
        },
        f,
        indent=1,
      )


if __name__ == "__main__":
  main()
