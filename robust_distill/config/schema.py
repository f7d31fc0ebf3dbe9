"""Config schema and defaults (ml-collections; strings and numbers only), and what follows
from a config: its stages, whether a stage reads a teacher, its smoke-run limits.

A run config has:
  * ``dataset``: the dataset's name (``--config.dataset=mock`` swaps in synthetic data of the
    same geometry, see ``data.mock_like``);
  * ``data``: data_dir, manual_dir, val_size, augment, seed, mock_examples, mock_like, workers;
  * ``teacher`` and ``student``: one *stage* each (see ``stage``), plus for the teacher
    ``source`` ('precomputed' | 'online') and ``flip_aware``;
  * ``eval``: the final evaluation (clean, PGD-k CE, CW-inf) over the test split;
  * ``stages``: comma-separated subset of 'teacher,precompute,student,eval', run in that order;
  * ``num_devices``, ``fsdp``, ``distributed`` (+ ``coordinator``, ``num_processes``,
    ``process_id``): the mesh and multi-host set-up (see ``parallel``; the number of CPU host
    devices is an entry point's ``--host_devices`` flag, not part of the config);
  * ``steps``: 0 for the configured schedule; N > 0 for a smoke run (``smoke_limits``);
  * ``checkpoint``, ``log_every``, ``seed``.
"""

import importlib.util
import math
import os
import sys

import ml_collections

from robust_distill.losses import terms
from robust_distill.train import attack as train_attack

STAGES = ("teacher", "precompute", "student", "eval")
TEACHER_SOURCES = ("precomputed", "online")


def attack(
  *,
  eps=8 / 255,
  step_size=2 / 255,
  steps=10,
  objective="ce",
  norm="linf",
  init="uniform",
  bn_mode="eval",
  unroll=-1,
) -> ml_collections.ConfigDict:
  """An attack block. ``unroll=-1``: unrolled on CPU, rolled on accelerators."""
  return ml_collections.ConfigDict(
    dict(
      eps=eps,
      step_size=step_size,
      steps=steps,
      objective=objective,
      norm=norm,
      init=init,
      bn_mode=bn_mode,
      unroll=unroll,
    )
  )


def stage(
  *,
  model="small_cnn",
  model_kwargs=None,
  epochs=1.0,
  batch_size=128,
  lr=0.1,
  momentum=0.9,
  weight_decay=5e-4,
  schedule="piecewise",
  decay_epochs=(),
  loss=None,
  attack_cfg=None,
  temperature=1.0,
) -> ml_collections.ConfigDict:
  """A training stage: model, optimiser, attack and config-weighted loss terms."""
  losses = terms.defaults()  # every term of losses.terms.TERMS at weight 0, options at defaults
  losses.update(loss or {})
  return ml_collections.ConfigDict(
    dict(
      model=model,
      model_kwargs=dict(model_kwargs or {}),
      temperature=temperature,
      batch_size=batch_size,
      optim=dict(
        name="sgd",
        epochs=float(epochs),  # a float, so that --config...epochs=1.5 overrides any stage
        lr=float(lr),
        momentum=momentum,
        nesterov=False,
        weight_decay=weight_decay,
        schedule=schedule,
        decay_epochs=tuple(decay_epochs),
        decay_factor=0.1,
      ),
      loss=losses,
      attack=attack_cfg if attack_cfg is not None else attack(),
      # AWP (Wu et al. 2020) around the stage's loss: gamma 0 = off.
      awp=dict(gamma=0.0, proxy_lr=0.01, warmup_epochs=0.0),
      # '' = random initialisation; 'teacher' = the (online) teacher's parameters (AGKD-BML).
      init_from="",
      val_every_epochs=1.0,
      stop_at_step=0,
    )
  )


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stages = "teacher,precompute,student,eval"
  c.num_devices = -1
  # fsdp: size of the mesh's 'fsdp' axis (1: a 1-D 'data' mesh, parameters replicated; F > 1:
  # a (devices / F, F) mesh, large parameters and their optimizer state split F ways).
  c.fsdp = 1
  c.distributed = False
  c.coordinator = ""  # host:port of process 0; '' = from the environment (TPU, SLURM)
  c.num_processes = 0  # 0 = from the environment
  c.process_id = -1  # -1 = from the environment
  c.log_every = 50
  c.dataset = "fashion_mnist"
  # mock_like: the dataset whose image shape and classes the synthetic 'mock' dataset takes
  # (configs set it to their own dataset, so --config.dataset=mock keeps the geometry).
  # workers: processes that decode and augment training batches (0: in the training process).
  # views: random-resized-crop views per example, cycled over epochs (0: a new one every epoch;
  # a precomputed teacher then covers one per planned epoch).
  c.data = dict(
    data_dir="", manual_dir="", val_size=5000, augment="none", seed=0, mock_examples=0,
    mock_like="", workers=0, views=0,
  )  # fmt: skip
  c.steps = 0
  c.teacher = stage()
  c.teacher.source = "precomputed"
  c.teacher.flip_aware = False
  c.teacher.workdir = ""  # reuse a teacher trained elsewhere (its stage dir); '' = train here
  # topk: replayed views store the teacher's top-k logits per view (0: all classes, float16).
  c.teacher.topk = 0
  c.student = stage()
  # Eval batch 128-256 measured fastest on 2 CPU cores (54 img/s vs 36 at 512-1024).
  # n: test points for clean / PGD (-1: all); cw_n: the first cw_n of them also get CW-inf.
  # autoattack: '' (off), 'standard', 'rand' or a comma-separated attack list, run by
  # robust_distill.eval on the first autoattack_n test points (-1: all) after PGD/CW;
  # autoattack_opts: 'KEY=VALUE,...' overrides of the attack settings (tests use fewer steps);
  # autoattack_batch_size: 0 = 256 (rounded up to 32 x devices); autoattack_check_n: points of
  # the honesty checks.
  c.eval = dict(
    batch_size=256,
    n=-1,
    eps=-1.0,
    pgd_steps=20,
    pgd_step_size=-1.0,
    cw_steps=30,
    cw_step_size=-1.0,
    cw_n=-1,
    val_n=1000,
    val_pgd_steps=10,
    autoattack="standard",
    autoattack_n=1000,
    autoattack_opts="",
    autoattack_batch_size=0,
    autoattack_check_n=256,
  )
  # allow_config_change: resume a stage whose stored config.json differs from this one.
  # A checkpoint that fails verification is always moved aside (STAGE/ckpt_corrupt/) and the
  # previous one used: the same command resumes, with no flag.
  c.checkpoint = dict(every_steps=200, keep=2, allow_config_change=False)
  return c


def train_seed(config) -> int:
  """The seed of the training input order and augmentation."""
  return config.data.seed * 1000 + config.seed


def replay_views(config) -> int:
  """How many views of each example a precomputed teacher must cover: 0 (one, the example
  as it is) unless the training augmentation is 'rrc_flip', whose views are replayed:
  ``data.views``, or one per planned student epoch when that is 0."""
  if config.teacher.source != "precomputed" or config.data.augment != "rrc_flip":
    return 0
  return config.data.get("views", 0) or max(int(math.ceil(config.student.optim.epochs)), 1)


def stage_names(config) -> list[str]:
  names = [s.strip() for s in config.stages.split(",") if s.strip()]
  bad = [s for s in names if s not in STAGES]
  if bad:
    raise ValueError(f"Unknown stage(s) {bad}; valid stages: {list(STAGES)}")
  return names


def needs_teacher(stage_cfg) -> bool:
  """Whether a stage reads teacher logits (a loss term or its training attack)."""
  return (
    terms.needs_teacher_logits(stage_cfg.loss)
    or stage_cfg.attack.objective in train_attack.TEACHER_OBJECTIVES
  )


def class_pool_size(stage_cfg) -> int:
  """Images per class the input pipeline must add to each batch (``pool_image``), or 0."""
  if terms.needs_backward(stage_cfg.loss) and stage_cfg.loss.bml_negative == "pool":
    return int(stage_cfg.loss.bml_pool_size)
  return 0


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
  c.data.workers = min(c.data.get("workers", 0), 2)
  if c.data.augment == "rrc_flip" and not c.data.get("views", 0):
    c.data.views = 1  # one view, not one per planned epoch (a precompute would replay them all)
  for name in ("teacher", "student"):
    c[name].batch_size = min(c[name].batch_size, b)
    c[name].attack.unroll = 1
    c[name].attack.steps = min(c[name].attack.steps, 2)
  c.eval.update(
    batch_size=b,
    n=b,
    val_n=b,
    autoattack_n=b,
    autoattack_batch_size=b,
    pgd_steps=min(c.eval.pgd_steps, 2),
    cw_steps=min(c.eval.cw_steps, 2),
    val_pgd_steps=min(c.eval.val_pgd_steps, 2),
    autoattack_check_n=0,
    autoattack_opts="n_iter=2,fab_iter=2,n_queries=10,n_target_classes=2",
  )
  return c


def load(spec: str) -> ml_collections.ConfigDict:
  """``configs/FILE.py[:ARG]`` -> the ConfigDict of ``get_config(ARG)`` (``get_config()``
  without an argument)."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config file {path}")
  name = "config_" + os.path.splitext(os.path.basename(path))[0]
  s = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(s)
  # Registered like an import, so that provenance.imported_files sees the config files a run read.
  sys.modules[name] = mod
  s.loader.exec_module(mod)
  return mod.get_config(arg) if arg else mod.get_config()
