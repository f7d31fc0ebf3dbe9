"""Validation of a run config: every bad value is reported, with the field and what is allowed,
before any data loads or any stage runs."""

import math

from flax import nnx
import jax

from robust_distill import attacks, models
from robust_distill.config.schema import TEACHER_SOURCES, needs_teacher, stage_names
from robust_distill.data import pipeline
from robust_distill.losses import terms
from robust_distill.train import attack as train_attack, optim


def _check_stage(name, s):
  try:
    models.check_name(s.model)
  except ValueError as e:
    raise ValueError(f"{name}.model: {e}") from None
  a = s.attack
  if a.objective not in train_attack.ATTACK_OBJECTIVES:
    raise ValueError(
      f"{name}.attack.objective: unknown {a.objective!r}; valid: "
      f"{sorted(train_attack.ATTACK_OBJECTIVES)}"
    )
  try:
    attacks.check_names(norm=a.norm, init=a.init)
  except ValueError as e:
    raise ValueError(f"{name}.attack: {e}") from None
  if a.bn_mode not in train_attack.BN_MODES:
    raise ValueError(
      f"{name}.attack.bn_mode: unknown {a.bn_mode!r}; valid: {list(train_attack.BN_MODES)}"
    )
  if a.eps < 0 or a.step_size < 0 or a.steps < 0:
    raise ValueError(f"{name}.attack: eps, step_size and steps must be >= 0")
  if a.norm == "linf" and a.eps > 1:
    raise ValueError(f"{name}.attack.eps={a.eps}: an L-inf radius on images in [0, 1] must be <= 1")
  if a.steps > 0 and (a.eps == 0 or a.step_size == 0):
    raise ValueError(
      f"{name}.attack: eps={a.eps}, step_size={a.step_size} with steps={a.steps}: the attack "
      "cannot move; set attack.steps=0 to train on clean inputs"
    )
  if s.optim.schedule not in optim.SCHEDULES:
    raise ValueError(
      f"{name}.optim.schedule: unknown {s.optim.schedule!r}; valid: {list(optim.SCHEDULES)}"
    )
  terms.check(s.loss, f"{name}.loss")
  if s.temperature <= 0:
    raise ValueError(f"{name}: temperatures must be > 0")
  if s.get("init_from", "") not in ("", "teacher"):
    raise ValueError(f"{name}.init_from: unknown {s.init_from!r}; valid: ['', 'teacher']")
  if s.awp.gamma < 0 or s.awp.proxy_lr <= 0:
    raise ValueError(f"{name}.awp: gamma must be >= 0 and proxy_lr > 0")
  if s.optim.name not in optim.OPTIMIZERS:
    raise ValueError(
      f"{name}.optim.name: unknown {s.optim.name!r}; valid: {list(optim.OPTIMIZERS)}"
    )
  if s.batch_size <= 0 or s.optim.epochs <= 0 or s.optim.lr <= 0:
    raise ValueError(f"{name}: batch_size, optim.epochs and optim.lr must be > 0")


def _leaves(d: dict, prefix: str = ""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(v, (list, tuple)):
      yield from ((f"{prefix}{k}[{i}]", x) for i, x in enumerate(v))
    else:
      yield f"{prefix}{k}", v


def _check_model(name, s, shape, classes) -> None:
  """The stage's model builds (on abstract shapes) with its ``model_kwargs``."""
  try:
    nnx.eval_shape(
      lambda: models.build_for_data(s.model, s.model_kwargs, num_classes=classes, image_shape=shape)
    )
  except Exception as e:  # a bad keyword or value fails anywhere inside the model
    first = (str(e).strip().splitlines() or [""])[0][:200]
    raise ValueError(
      f"{name}.model_kwargs={dict(s.model_kwargs)}: cannot build {s.model!r} "
      f"({type(e).__name__}: {first})"
    ) from None


def _check_eval(e) -> None:
  if e.eps != -1.0 and not 0 <= e.eps <= 1:
    raise ValueError(f"eval.eps={e.eps}: must be in [0, 1], or -1 for the stage's attack eps")
  for key in ("batch_size", "val_n"):
    if e[key] <= 0:
      raise ValueError(f"eval.{key}={e[key]}: must be > 0")
  for key in ("pgd_steps", "cw_steps", "val_pgd_steps", "autoattack_batch_size",
              "autoattack_check_n"):  # fmt: skip
    if e[key] < 0:
      raise ValueError(f"eval.{key}={e[key]}: must be >= 0")
  for key in ("n", "cw_n", "autoattack_n"):
    if e[key] == 0 or e[key] < -1:
      raise ValueError(f"eval.{key}={e[key]}: must be > 0, or -1 (all)")


def check_devices(config, num_devices: int) -> None:
  """Every batch of the run divides over ``num_devices`` (checked before any data loads)."""
  names = stage_names(config)
  batches = {f"{n}.batch_size": config[n].batch_size for n in ("teacher", "student") if n in names}
  batches["eval.batch_size"] = config.eval.batch_size
  if config.eval.autoattack_batch_size:
    batches["eval.autoattack_batch_size"] = config.eval.autoattack_batch_size
  for key, b in batches.items():
    if b % num_devices:
      raise ValueError(
        f"{key}={b} does not divide over the {num_devices} devices of the mesh; use a multiple "
        f"of {num_devices} (or --host_devices / --config.num_devices)"
      )


def validate(config) -> None:
  """Raises ValueError naming the field, the value and what is allowed for any bad value."""
  for path, v in _leaves(config.to_dict()):
    if isinstance(v, float) and not math.isfinite(v):
      raise ValueError(f"{path}={v}: must be a finite number")
  names = stage_names(config)
  try:
    pipeline.geometry(config.dataset, config.data.mock_like)
  except ValueError as e:
    raise ValueError(f"dataset / data.mock_like: {e}") from None
  aug = config.data.augment
  if aug not in pipeline.AUGMENTS:
    raise ValueError(f"data.augment: unknown {aug!r}; valid: {list(pipeline.AUGMENTS)}")
  if config.dataset in pipeline.LAZY and aug not in ("none", "rrc_flip"):
    raise ValueError(
      f"data.augment={aug!r}: {config.dataset} is read record by record; valid "
      "augmentations: ['none', 'rrc_flip']"
    )
  if config.steps < 0:
    raise ValueError("steps must be >= 0 (0: the configured schedule; N: a smoke run)")
  if config.data.get("views", 0) < 0 or config.teacher.get("topk", 0) < 0:
    raise ValueError(
      f"data.views={config.data.get('views', 0)}, teacher.topk={config.teacher.get('topk', 0)}:"
      " must be >= 0"
    )
  if config.data.get("workers", 0) < 0:
    raise ValueError(f"data.workers={config.data.workers}: must be >= 0 (0: no worker processes)")
  if config.get("fsdp", 1) < 1:
    raise ValueError(f"fsdp={config.fsdp}: the size of the mesh's fsdp axis must be >= 1")
  if config.checkpoint.every_steps <= 0 or config.checkpoint.keep < 1 or config.log_every <= 0:
    raise ValueError(
      f"checkpoint.every_steps={config.checkpoint.every_steps}, checkpoint.keep="
      f"{config.checkpoint.keep}, log_every={config.log_every}: must be >= 1"
    )
  if config.data.val_size < 0 or config.data.mock_examples < 0:
    raise ValueError("data.val_size and data.mock_examples must be >= 0")
  _check_eval(config.eval)
  if config.eval.autoattack:
    autoattack = attacks.autoattack
    autoattack.resolve(config.eval.autoattack)
    autoattack.options(**autoattack.parse_opts(config.eval.autoattack_opts))
  shape, classes = pipeline.geometry(config.dataset, config.data.mock_like)
  for name in ("teacher", "student"):
    if name in names or (name == "teacher" and ("precompute" in names)):
      _check_stage(name, config[name])
      _check_model(name, config[name], shape, classes)
  if "student" in names and needs_teacher(config.student):
    if config.teacher.source not in TEACHER_SOURCES:
      raise ValueError(
        f"teacher.source: unknown {config.teacher.source!r}; valid: {list(TEACHER_SOURCES)}"
      )
    if config.student.get("init_from", "") == "teacher":
      t, st = config.teacher, config.student
      if (
        config.teacher.source != "online"
        or t.model != st.model
        or (t.model_kwargs.to_dict() != st.model_kwargs.to_dict())
      ):
        raise ValueError(
          "student.init_from='teacher' needs teacher.source='online' and the "
          "same model and model_kwargs for the teacher and the student"
        )
    feature_terms = terms.feature_terms(config.student.loss)
    if feature_terms:
      _check_feature(config, feature_terms)
    if config.teacher.source == "precomputed":
      if config.student.attack.objective == "kl_models":
        raise ValueError(
          "student.attack.objective='kl_models' evaluates the teacher on moving "
          "adversarial inputs; it needs teacher.source='online'"
        )
      online_terms = terms.online_terms(config.student.loss)
      if online_terms:
        raise ValueError(
          f"student.loss terms {online_terms} run the teacher on adversarial "
          "inputs; they need teacher.source='online'"
        )
      if aug in pipeline.RANDOM_CROPS and aug != "rrc_flip":  # rrc_flip views are replayed
        raise ValueError(
          f"teacher.source='precomputed' with data.augment={aug!r} is invalid: the "
          "teacher's logits are computed once per example, but random crops change what the "
          "teacher would see at every step. Use teacher.source='online', "
          "data.augment='flip' with teacher.flip_aware=True, or data.augment='rrc_flip' "
          "(whose views the precompute replays)."
        )
      if aug == "flip" and not config.teacher.flip_aware:
        raise ValueError(
          "teacher.source='precomputed' with data.augment='flip' needs "
          "teacher.flip_aware=True (logits precomputed for both the image and its mirror), "
          "or teacher.source='online'."
        )


def _check_feature(config, terms) -> None:
  """The attention terms' layer must be a feature of both models (checked on abstract shapes)."""
  shape, classes = pipeline.geometry(config.dataset, config.data.mock_like)
  layer = config.student.loss.at_layer
  for name in ("student", "teacher"):
    s = config[name]
    graphdef, state = nnx.split(
      nnx.eval_shape(
        lambda s=s: models.build_for_data(
          s.model, s.model_kwargs, num_classes=classes, image_shape=shape
        )
      )
    )
    feats = jax.eval_shape(
      lambda st, x, g=graphdef: nnx.merge(g, st)(x, return_features=True)[1],
      state,
      jax.ShapeDtypeStruct((1,) + tuple(shape), jax.numpy.float32),
    )
    if layer not in feats:
      raise ValueError(
        f"student.loss.at_layer={layer!r} (terms {terms}) is not a feature of "
        f"the {name}'s model {s.model!r}; its features: {sorted(feats)}"
      )
