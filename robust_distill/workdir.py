"""Reading a training workdir: its layout, the configs it was trained with, its checkpoints as
models, and its test split. Notebooks, the evaluation package, the teacher import and the
benchmarks depend on this module; it depends on none of them.

Layout of a workdir ``W``: ``W/<stage>/`` for the stages ``teacher`` and ``student``, each with
``config.json`` (the run's config), ``ckpt/`` and ``ckpt_best/`` (``train.checkpoint``),
``metrics.jsonl`` and, once finished, ``done.json``; ``W/teacher_logits/`` (the precompute);
``W/eval.json`` and ``W/eval_autoattack.json`` (the evaluations). ``load_split`` and
``test_split`` give a run's data (from ``robust_distill.data.splits``), for notebooks.
"""

import json
import os
import subprocess
import sys
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from robust_distill import config as C, models, parallel
from robust_distill.data import pipeline
from robust_distill.data.splits import load_split, test_split
from robust_distill.metrics import read_jsonl
from robust_distill.train import checkpoint as ckpt_lib, optim, step as step_lib

__all__ = [
  "RestoredModel",
  "StageModel",
  "as_restored",
  "command_line",
  "build_model",
  "default_stage",
  "git_commit",
  "load_split",
  "load_stage_model",
  "read_config",
  "restore",
  "stage_dir",
  "test_split",
]
WHICH = ("best", "latest")


def stage_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


def read_config(stage_directory: str) -> ml_collections.ConfigDict:
  """The config a stage was trained with (``STAGE/config.json``), in today's schema."""
  path = os.path.join(stage_directory, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no trained stage in {stage_directory} ({path} missing)")
  with open(path) as f:
    return C.upgrade(json.load(f))


class StageModel(NamedTuple):
  graphdef: Any
  params: Any
  stats: Any
  step: int


def build_model(stage_cfg, num_classes: int, image_shape, seed: int):
  return models.build_for_data(
    stage_cfg.model,
    stage_cfg.model_kwargs,
    num_classes=num_classes,
    image_shape=image_shape,
    seed=seed,
  )


def load_stage_model(config, name: str, workdir: str, mesh, *, which: str = "best", log=print
                     ) -> StageModel:  # fmt: skip
  """The newest ``which`` ('best' or 'latest') checkpoint of a trained stage that verifies,
  placed on ``mesh`` by ``parallel.state_sharding`` (replicated unless the mesh has an fsdp
  axis); an unusable one is named in a warning and the next newest (of that kind, then of the
  other) is used. Nothing on disk is changed."""
  sdir = (
    config.teacher.workdir
    if name == "teacher" and config.teacher.workdir
    else stage_dir(workdir, name)
  )
  stage_cfg = config[name]
  shape, num_classes = pipeline.geometry(config.dataset, config.data.mock_like)
  # Shapes only: the checkpoint overwrites every value, so nothing is initialised or compiled.
  graphdef, state = jax.eval_shape(
    lambda: step_lib.init_state(
      build_model(stage_cfg, num_classes, shape, config.seed),
      optim.make_optimizer(stage_cfg.optim, 1),
    )
  )
  abstract = ckpt_lib.abstract(state, parallel.state_sharding(state, mesh))
  if not any(os.path.isdir(os.path.join(sdir, d)) for d in ("ckpt", "ckpt_best")):
    raise FileNotFoundError(f"no checkpoint of stage {name!r} in {sdir}; train it first")
  ck = ckpt_lib.Checkpointer(sdir)
  try:
    state, _, step, _ = ck.restore_newest(abstract, which=which, log=log)
  except FileNotFoundError:
    raise FileNotFoundError(f"no checkpoint of stage {name!r} in {sdir}; train it first") from None
  finally:
    ck.close()
  return StageModel(graphdef, state["params"], state["stats"], step)


class RestoredModel:
  """A trained model restored for interactive use: ``restored(x)`` gives eval-mode logits
  (divided by the stage's fixed temperature, i.e. exactly the function that was trained and
  evaluated) for images in [0, 1], NHWC.

  Attributes: ``module`` (the NNX module), ``config``, ``stage``, ``step``, ``history`` (the
  metrics.jsonl records), ``temperature``.
  """

  def __init__(self, module, config, stage, step, history):
    self.module, self.config, self.stage, self.step, self.history = (
      module,
      config,
      stage,
      step,
      history,
    )
    self.temperature = float(config[stage].temperature)
    self.module.eval()

  def __call__(self, x):
    graphdef, state = nnx.split(self.module)  # at call time: edits to ``module`` take effect
    return _forward(graphdef, state, jnp.asarray(x, jnp.float32)) / self.temperature


@jax.jit
def _forward(graphdef, state, x):
  """The module's forward as one compiled program (eagerly, every operation compiles alone)."""
  return nnx.merge(graphdef, state)(x)


def default_stage(workdir: str) -> str:
  """'student' if the workdir has a trained student, else 'teacher'."""
  return "student" if os.path.isdir(os.path.join(workdir, "student", "ckpt")) else "teacher"


def as_restored(model: StageModel, config, stage: str, workdir: str) -> RestoredModel:
  """A loaded ``StageModel`` as the deployed callable (what ``restore`` returns)."""
  return RestoredModel(
    nnx.merge(model.graphdef, model.params, model.stats),
    config,
    stage,
    model.step,
    read_jsonl(os.path.join(stage_dir(workdir, stage), "metrics.jsonl")),
  )


def restore(workdir: str, *, which: str = "best", stage: str | None = None) -> RestoredModel:
  """Restores stage ``stage`` (default: 'student' if trained, else 'teacher') of ``workdir``.

  Returns a callable ``model(images) -> logits`` (NHWC images in [0, 1]; eval mode; logits
  divided by the stage's fixed temperature: exactly the function that was trained and
  evaluated) with attributes ``config``, ``history`` (the stage's ``metrics.jsonl`` records),
  ``step``, ``stage``, ``temperature`` and ``module`` (the Flax NNX module). ``which``: 'best'
  (by validation PGD accuracy) or 'latest'. Works on any number of devices, whatever the
  number the checkpoint was saved on: the parameters go to the first local device.
  """
  if which not in WHICH:
    raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
  stage = stage or default_stage(workdir)
  config = read_config(stage_dir(workdir, stage))
  mesh = parallel.make_mesh(1, devices=jax.local_devices())
  m = load_stage_model(config, stage, workdir, mesh, which=which)
  return as_restored(m, config, stage, workdir)


def command_line(argv: list[str] | None = None) -> str:
  """The command that is running, as a reader would retype it from the repository root:
  ``python -m robust_distill.<module> ...`` for a package entry point, a relative script path
  otherwise (no machine paths in results)."""
  argv = list(sys.argv if argv is None else argv)
  prog = os.path.abspath(argv[0]) if argv else ""
  pkg = os.path.dirname(os.path.abspath(__file__))
  if prog.startswith(pkg + os.sep) and prog.endswith(".py"):
    mod = os.path.relpath(prog[:-3], os.path.dirname(pkg)).replace(os.sep, ".")
    head = ["python", "-m", mod.removesuffix(".__main__")]
  elif prog:
    head = ["python", os.path.relpath(prog, os.path.dirname(pkg))]
  else:
    head = ["python"]
  return " ".join(head + argv[1:])


def git_commit() -> str:
  """The commit of the code that produced a result ('' outside a git checkout)."""
  try:
    return subprocess.run(
      ["git", "rev-parse", "HEAD"],
      capture_output=True,
      text=True,
      cwd=os.path.dirname(os.path.abspath(__file__)),
      timeout=10,
      check=True,
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ""
