"""Turns a PyTorch / RobustBench checkpoint into a finished teacher stage of a workdir.

    python -m robust_distill.import_teacher --torch=Chen2021LTD_WRN34_10.pt \
        --config=configs/adaad.py:cifar10 --workdir=runs/adaad
    python -m robust_distill.main --config=configs/adaad.py:cifar10 --workdir=runs/adaad

The weights are read with ``weights_only=True`` (``robust_distill.models.from_torch``) into the
config's teacher architecture (``teacher.model``, e.g. ``wrn34_10``; ``--arch`` overrides the key
naming when it differs, e.g. ``wide_resnet``), then saved as ``WORKDIR/teacher``: an orbax
checkpoint (best and latest), the config, and ``done.json`` naming the source file. The training
command then skips the teacher stage and distils from the imported model (online, or after the
``precompute`` stage). ``--config.X=Y`` style overrides are not parsed here: pass the same
config to both commands.
"""

from robust_distill import compile_cache, cpu_devices

cpu_devices.configure_from_argv()  # before JAX is imported: XLA reads the flag once
compile_cache.configure()  # likewise: JAX reads its cache settings at import

import argparse
import json
import os
import sys

from flax import nnx
import jax

from robust_distill import config as config_lib, errors, files, models, parallel
from robust_distill.data import pipeline
from robust_distill.train import checkpoint as ckpt_lib, optim, step as step_lib


def _layout(model) -> list:
  """``(path, shape)`` of every array of an NNX model (parameters and statistics)."""
  leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model))[0]
  return [(jax.tree_util.keystr(k), tuple(v.shape)) for k, v in leaves]


def import_teacher(torch_path: str, config, workdir: str, *, arch: str = "", log=print) -> dict:
  """Writes ``workdir/teacher`` from the PyTorch file; returns its ``done.json`` record."""
  t = config.teacher
  sdir = os.path.join(workdir, "teacher")
  if os.path.exists(os.path.join(sdir, "done.json")):
    raise FileExistsError(f"{sdir} already holds a finished teacher; remove it to re-import")
  shape, classes = pipeline.geometry(config.dataset, config.data.mock_like)
  kw = dict(t.model_kwargs)
  kw.setdefault("in_channels", shape[-1])
  model = models.from_torch(torch_path, arch or t.model, num_classes=classes, **kw)
  # The imported parameters must fit the config's own teacher architecture exactly.
  want = nnx.eval_shape(
    lambda: models.build_for_data(t.model, t.model_kwargs, num_classes=classes, image_shape=shape)
  )
  if _layout(model) != _layout(want):
    raise ValueError(
      f"the imported {arch or t.model} is not the config's teacher "
      f"({t.model}, {dict(t.model_kwargs)}); set --arch or the config's "
      "teacher.model / model_kwargs"
    )
  _, state = step_lib.init_state(model, optim.make_optimizer(t.optim, 1))
  state = parallel.replicate(state, parallel.make_mesh())
  os.makedirs(sdir, exist_ok=True)
  files.write_text(os.path.join(sdir, "config.json"), config.to_json_best_effort(indent=1))
  meta = {
    "data_iter": None,
    "best_val": -1.0,
    "step": 0,
    "epoch": 0.0,
    "stage": "teacher",
    "imported_from": os.path.abspath(torch_path),
    "config": json.loads(config.to_json_best_effort()),
  }
  ck = ckpt_lib.Checkpointer(sdir)
  ck.save(0, state, meta, kind="best")
  ck.save(0, state, meta, kind="latest")
  ck.close()
  done = {"steps": 0, "imported_from": os.path.abspath(torch_path), "arch": arch or t.model}
  files.write_json(os.path.join(sdir, "done.json"), done)
  log(
    f"[import_teacher] {torch_path} -> {sdir} ({t.model}, {classes} classes); the training "
    "command now skips the teacher stage"
  )
  return done


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--torch", required=True, help="PyTorch state_dict file (.pt / .pth)")
  p.add_argument("--config", required=True, help="configs/FILE.py[:ARG] of the training run")
  p.add_argument("--workdir", required=True)
  p.add_argument("--arch", default="", help="key naming of the file (default: teacher.model)")
  cpu_devices.add_argument(p)
  p.add_argument("--verbose", action="store_true", help="on an error, show the traceback too")
  a = p.parse_args(argv)
  try:
    import_teacher(a.torch, config_lib.load(a.config), a.workdir, arch=a.arch)
  except errors.EXPECTED as e:
    if a.verbose:
      raise
    sys.exit(f"import_teacher: {errors.one_line(e)}")


if __name__ == "__main__":
  main()
