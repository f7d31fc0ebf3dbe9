"""Config schema, defaults and validation (ml-collections; strings and numbers only).

A run config has:
  * ``dataset``: the dataset's name (``--config.dataset=mock`` swaps in synthetic data of the
    same geometry, see ``data.mock_like``);
  * ``data``: data_dir, manual_dir, val_size, augment, seed, mock_examples, mock_like;
  * ``teacher`` and ``student``: one *stage* each (see ``stage``), plus for the teacher
    ``source`` ('precomputed' | 'online') and ``flip_aware``;
  * ``eval``: the final evaluation (clean, PGD-k CE, CW-inf) over the test split;
  * ``stages``: comma-separated subset of 'teacher,precompute,student,eval', run in that order;
  * ``host_devices``, ``num_devices``, ``distributed`` (+ ``coordinator``, ``num_processes``,
    ``process_id``): the mesh and multi-host set-up (see ``hostdevices``, ``parallel``);
  * ``steps``: 0 for the configured schedule; N > 0 for a smoke run (``smoke_limits``);
  * ``checkpoint``, ``log_every``, ``seed``.

``validate`` rejects unknown names and inconsistent combinations before anything is computed.
"""

import ml_collections

STAGES = ("teacher", "precompute", "student", "eval")
TEACHER_SOURCES = ("precomputed", "online")


def attack(*, eps=8 / 255, step_size=2 / 255, steps=10, objective="ce", norm="linf",
           init="uniform", bn_mode="eval", unroll=-1) -> ml_collections.ConfigDict:
  """An attack block. ``unroll=-1``: unrolled on CPU, rolled on accelerators."""
  return ml_collections.ConfigDict(dict(eps=eps, step_size=step_size, steps=steps,
                                        objective=objective, norm=norm, init=init,
                                        bn_mode=bn_mode, unroll=unroll))


def stage(*, model="small_cnn", model_kwargs=None, epochs=1.0, batch_size=128, lr=0.1,
          momentum=0.9, weight_decay=5e-4, schedule="piecewise", decay_epochs=(),
          loss=None, attack_cfg=None, temperature=1.0) -> ml_collections.ConfigDict:
  """A training stage: model, optimiser, attack and config-weighted loss terms."""
  losses = dict(ce_clean=0.0, ce_adv=0.0, trades_kl=0.0, kd_clean=0.0, kd_adv=0.0,
                kd_adv_adv=0.0, mart_bce=0.0, mart_kl=0.0, pcr=0.0, dgad_kd=0.0, iad_intro=0.0,
                kd_teacher_temperature=1.0, kd_student_temperature=1.0, kd_scale=1.0,
                kd_reduction="batchmean", kd_teacher_transform="none",
                label_smoothing=0.0, dgad_map=1, dgad_els=1, iad_beta=0.1, iad_begin=0.0,
                mart_margin=0.0, at_adv=0.0, at_bwd=0.0, bml_triplet=0.0, at_layer="last",
                bml_margin=0.03, bml_l2=0.001, bml_negative="pool", bml_pool_size=8)
  losses.update(loss or {})
  return ml_collections.ConfigDict(dict(
      model=model, model_kwargs=dict(model_kwargs or {}), temperature=temperature,
      batch_size=batch_size,
      optim=dict(name="sgd", epochs=epochs, lr=lr, momentum=momentum, nesterov=False,
                 weight_decay=weight_decay, schedule=schedule, decay_epochs=tuple(decay_epochs),
                 decay_factor=0.1),
      loss=losses, attack=attack_cfg if attack_cfg is not None else attack(),
      # AWP (Wu et al. 2020) around the stage's loss: gamma 0 = off.
      awp=dict(gamma=0.0, proxy_lr=0.01, warmup_epochs=0.0),
      # '' = random initialisation; 'teacher' = the (online) teacher's parameters (AGKD-BML).
      init_from="",
      val_every_epochs=1.0, stop_at_step=0))


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stages = "teacher,precompute,student,eval"
  c.host_devices = 8
  c.num_devices = -1
  c.distributed = False
  c.coordinator = ""  # host:port of process 0; '' = from the environment (TPU, SLURM)
  c.num_processes = 0  # 0 = from the environment
  c.process_id = -1  # -1 = from the environment
  c.log_every = 50
  c.dataset = "fashion_mnist"
  # mock_like: the dataset whose image shape and classes the synthetic 'mock' dataset takes
  # (configs set it to their own dataset, so --config.dataset=mock keeps the geometry).
  c.data = dict(data_dir="", manual_dir="", val_size=5000, augment="none", seed=0,
                mock_examples=0, mock_like="")
  c.steps = 0
  c.teacher = stage()
  c.teacher.source = "precomputed"
  c.teacher.flip_aware = False
  c.teacher.workdir = ""  # reuse a teacher trained elsewhere (its stage dir); '' = train here
  c.student = stage()
  # Eval batch 128-256 measured fastest on 2 CPU cores (54 img/s vs 36 at 512-1024).
  # autoattack: '' (off), 'standard', 'rand' or a comma-separated attack list, run by
  # robust_distill.evaluate on the first autoattack_n test points (-1: all) after PGD/CW;
  # autoattack_opts: 'KEY=VALUE,...' overrides of the attack settings (tests use fewer steps);
  # autoattack_batch_size: 0 = 32 x devices; autoattack_check_n: points of the honesty checks.
  c.eval = dict(batch_size=256, n=-1, eps=-1.0, pgd_steps=20, pgd_step_size=-1.0,
                cw_steps=30, cw_step_size=-1.0, val_n=1000, val_pgd_steps=10,
                autoattack="standard", autoattack_n=1000, autoattack_opts="",
                autoattack_batch_size=0, autoattack_check_n=256)
  # allow_config_change: resume a stage whose stored config.json differs from this one.
  c.checkpoint = dict(every_steps=200, keep=2, skip_corrupt=False, allow_config_change=False)
  return c


def stage_names(config) -> list[str]:
  names = [s.strip() for s in config.stages.split(",") if s.strip()]
  bad = [s for s in names if s not in STAGES]
  if bad:
    raise ValueError(f"Unknown stage(s) {bad}; valid stages: {list(STAGES)}")
  return names


def _check_stage(name, s):
  # Imports here keep `import robust_distill.config` free of JAX (the CLI sets XLA_FLAGS first).
  from robust_distill import models  # pylint: disable=import-outside-toplevel
  from robust_distill import attacks  # pylint: disable=import-outside-toplevel
  from robust_distill.train import step  # pylint: disable=import-outside-toplevel
  try:
    models.check_name(s.model)
  except ValueError as e:
    raise ValueError(f"{name}.model: {e}") from None
  a = s.attack
  if a.objective not in step.ATTACK_OBJECTIVES:
    raise ValueError(f"{name}.attack.objective: unknown {a.objective!r}; valid: "
                     f"{sorted(step.ATTACK_OBJECTIVES)}")
  try:
    attacks.check_names(norm=a.norm, init=a.init)
  except ValueError as e:
    raise ValueError(f"{name}.attack: {e}") from None
  if a.bn_mode not in step.BN_MODES:
    raise ValueError(f"{name}.attack.bn_mode: unknown {a.bn_mode!r}; valid: {list(step.BN_MODES)}")
  if a.eps < 0 or a.step_size < 0 or a.steps < 0:
    raise ValueError(f"{name}.attack: eps, step_size and steps must be >= 0")
  known = set(step.LOSS_TERMS) | set(step.LOSS_OPTIONS)
  unknown = sorted(set(s.loss.keys()) - known)
  if unknown:
    raise ValueError(f"{name}.loss: unknown loss term(s) {unknown}; valid terms: "
                     f"{sorted(step.LOSS_TERMS)}, options: {sorted(step.LOSS_OPTIONS)}")
  if not step.active_terms(s.loss):
    raise ValueError(f"{name}.loss: every term has weight 0; set at least one of "
                     f"{sorted(step.LOSS_TERMS)}")
  if s.temperature <= 0 or s.loss.kd_teacher_temperature <= 0 or (
      s.loss.kd_student_temperature <= 0):
    raise ValueError(f"{name}: temperatures must be > 0")
  if s.loss.kd_reduction not in step.KD_REDUCTIONS:
    raise ValueError(f"{name}.loss.kd_reduction: unknown {s.loss.kd_reduction!r}; valid: "
                     f"{list(step.KD_REDUCTIONS)}")
  from robust_distill.analysis import logits as logit_analysis  # pylint: disable=import-outside-toplevel
  if s.loss.kd_teacher_transform not in logit_analysis.TRANSFORMS:
    raise ValueError(f"{name}.loss.kd_teacher_transform: unknown {s.loss.kd_teacher_transform!r}"
                     f"; valid: {list(logit_analysis.TRANSFORMS)}")
  if s.loss.bml_negative not in step.NEGATIVE_SOURCES:
    raise ValueError(f"{name}.loss.bml_negative: unknown {s.loss.bml_negative!r}; valid: "
                     f"{list(step.NEGATIVE_SOURCES)}")
  if s.loss.bml_pool_size < 1:
    raise ValueError(f"{name}.loss.bml_pool_size must be >= 1")
  if s.get("init_from", "") not in ("", "teacher"):
    raise ValueError(f"{name}.init_from: unknown {s.init_from!r}; valid: ['', 'teacher']")
  if s.awp.gamma < 0 or s.awp.proxy_lr <= 0:
    raise ValueError(f"{name}.awp: gamma must be >= 0 and proxy_lr > 0")
  if s.optim.name not in step.OPTIMIZERS:
    raise ValueError(f"{name}.optim.name: unknown {s.optim.name!r}; valid: "
                     f"{list(step.OPTIMIZERS)}")
  if s.batch_size <= 0 or s.optim.epochs <= 0 or s.optim.lr <= 0:
    raise ValueError(f"{name}: batch_size, optim.epochs and optim.lr must be > 0")


def validate(config) -> None:
  """Raises ValueError with the list of valid names for any bad config value."""
  from robust_distill.data import pipeline  # pylint: disable=import-outside-toplevel
  names = stage_names(config)
  try:
    pipeline.geometry(config.dataset, config.data.mock_like)
  except ValueError as e:
    raise ValueError(f"dataset / data.mock_like: {e}") from None
  aug = config.data.augment
  if aug not in pipeline.AUGMENTS:
    raise ValueError(f"data.augment: unknown {aug!r}; valid: {list(pipeline.AUGMENTS)}")
  if config.dataset in pipeline.LAZY and aug not in ("none", "rrc_flip"):
    raise ValueError(f"data.augment={aug!r}: {config.dataset} is read record by record; valid "
                     "augmentations: ['none', 'rrc_flip']")
  if config.steps < 0:
    raise ValueError("steps must be >= 0 (0: the configured schedule; N: a smoke run)")
  if config.host_devices < 1:
    raise ValueError("host_devices must be >= 1")
  if config.eval.autoattack:
    from robust_distill.attacks import autoattack  # pylint: disable=import-outside-toplevel
    autoattack.resolve(config.eval.autoattack)
    autoattack.options(**autoattack.parse_opts(config.eval.autoattack_opts))
  from robust_distill.train import step  # pylint: disable=import-outside-toplevel
  for name in ("teacher", "student"):
    if name in names or (name == "teacher" and ("precompute" in names)):
      _check_stage(name, config[name])
  if "student" in names and step.needs_teacher(config.student):
    if config.teacher.source not in TEACHER_SOURCES:
      raise ValueError(f"teacher.source: unknown {config.teacher.source!r}; valid: "
                       f"{list(TEACHER_SOURCES)}")
    if config.student.get("init_from", "") == "teacher":
      t, st = config.teacher, config.student
      if config.teacher.source != "online" or t.model != st.model or (
          t.model_kwargs.to_dict() != st.model_kwargs.to_dict()):
        raise ValueError("student.init_from='teacher' needs teacher.source='online' and the "
                         "same model and model_kwargs for the teacher and the student")
    feature_terms = [t for t in ("at_adv", "at_bwd") if t in step.active_terms(config.student.loss)]
    if feature_terms:
      _check_feature(config, feature_terms)
    if config.teacher.source == "precomputed":
      if config.student.attack.objective == "kl_models":
        raise ValueError("student.attack.objective='kl_models' evaluates the teacher on moving "
                         "adversarial inputs; it needs teacher.source='online'")
      online_terms = [t for t in step.ONLINE_TEACHER_TERMS
                      if t in step.active_terms(config.student.loss)]
      if online_terms:
        raise ValueError(f"student.loss terms {online_terms} run the teacher on adversarial "
                         "inputs; they need teacher.source='online'")
      if aug in pipeline.RANDOM_CROPS:
        raise ValueError(
            f"teacher.source='precomputed' with data.augment={aug!r} is invalid: the "
            "teacher's logits are computed once per example, but random crops change what the "
            "teacher would see at every step. Use teacher.source='online', or "
            "data.augment='flip' with teacher.flip_aware=True.")
      if aug == "flip" and not config.teacher.flip_aware:
        raise ValueError(
            "teacher.source='precomputed' with data.augment='flip' needs "
            "teacher.flip_aware=True (logits precomputed for both the image and its mirror), "
            "or teacher.source='online'.")


def _check_feature(config, terms) -> None:
  """The attention terms' layer must be a feature of both models (checked on abstract shapes)."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from robust_distill import models  # pylint: disable=import-outside-toplevel
  from robust_distill.data import pipeline  # pylint: disable=import-outside-toplevel
  shape, classes = pipeline.geometry(config.dataset, config.data.mock_like)
  layer = config.student.loss.at_layer
  for name in ("student", "teacher"):
    s = config[name]
    graphdef, state = nnx.split(nnx.eval_shape(lambda s=s: models.build_for_data(
        s.model, s.model_kwargs, num_classes=classes, image_shape=shape)))
    feats = jax.eval_shape(
        lambda st, x, g=graphdef: nnx.merge(g, st)(x, return_features=True)[1], state,
        jax.ShapeDtypeStruct((1,) + tuple(shape), jax.numpy.float32))
    if layer not in feats:
      raise ValueError(f"student.loss.at_layer={layer!r} (terms {terms}) is not a feature of "
                       f"the {name}'s model {s.model!r}; its features: {sorted(feats)}")


def upgrade(config) -> "ml_collections.ConfigDict":
  """A config saved by an older version (``dataset`` a block with a ``name``) in today's
  schema (``dataset`` the name, ``data`` the rest); today's configs are returned unchanged."""
  d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  if isinstance(d.get("dataset"), dict):
    block = dict(d["dataset"])
    d["dataset"] = block.pop("name")
    block.setdefault("mock_like", "")
    d["data"] = block
    d.setdefault("steps", 0)
  return ml_collections.ConfigDict(d)


def smoke_limits(config, num_devices: int) -> "ml_collections.ConfigDict":
  """The config of a smoke run (``steps`` > 0), which checks that a config runs end to end,
  fast, on any machine; its numbers mean nothing. Every training stage stops after ``steps``
  steps (its learning-rate schedule unchanged); every batch holds 2 examples per device; attack
  loops are rolled (fast to compile) and take at most 2 iterations (a WRN-34-10 input-gradient
  pass takes seconds on a CPU); validation and test evaluation see one batch; AutoAttack runs
  on that batch with a few iterations and no honesty checks."""
  c = ml_collections.ConfigDict(config.to_dict())
  b = 2 * num_devices
  for name in ("teacher", "student"):
    c[name].batch_size = min(c[name].batch_size, b)
    c[name].attack.unroll = 1
    c[name].attack.steps = min(c[name].attack.steps, 2)
  c.eval.update(batch_size=b, n=b, val_n=b, autoattack_n=b, autoattack_batch_size=b,
                pgd_steps=min(c.eval.pgd_steps, 2), cw_steps=min(c.eval.cw_steps, 2),
                val_pgd_steps=min(c.eval.val_pgd_steps, 2),
                autoattack_check_n=0,
                autoattack_opts="n_iter=2,fab_iter=2,n_queries=10,n_target_classes=2")
  return c
