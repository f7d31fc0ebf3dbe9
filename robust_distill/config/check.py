"""Validation of a run config: every bad value is reported, with the field and what is allowed,
before any data loads or any stage runs."""

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


def validate(config) -> None:
  """Raises ValueError with the list of valid names for any bad config value."""
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
  if config.eval.autoattack:
    autoattack = attacks.autoattack
    autoattack.resolve(config.eval.autoattack)
    autoattack.options(**autoattack.parse_opts(config.eval.autoattack_opts))
  for name in ("teacher", "student"):
    if name in names or (name == "teacher" and ("precompute" in names)):
      _check_stage(name, config[name])
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
      if aug in pipeline.RANDOM_CROPS:
        raise ValueError(
          f"teacher.source='precomputed' with data.augment={aug!r} is invalid: the "
          "teacher's logits are computed once per example, but random crops change what the "
          "teacher would see at every step. Use teacher.source='online', or "
          "data.augment='flip' with teacher.flip_aware=True."
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
