"""Builder of the method configs (one file per method in configs/, each a few lines).

A method is a recipe over the loss vocabulary of ``robust_distill.train.step``: the student's
loss weights and options, its training attack (objective, init, BatchNorm mode), whether the
teacher must run online (on adversarial inputs), AWP, and the paper's CIFAR-10 schedule. This
module turns a recipe into a full config for a setting (the ``:ARG`` after a method's file):

* ``''`` or ``cifar10`` (default): the paper's CIFAR-10 setting: eps 8/255, step 2/255, 10 steps,
  ResNet-18 student (the method's own model where the paper differs), TRADES WRN-34-10 teacher
  (trained by the ``teacher`` stage, or reused with ``--config.teacher.workdir``, or imported
  from PyTorch), crop + flip augmentation (so the teacher runs online), SGD with the paper's
  learning rate, weight decay and schedule. An accelerator job.
* ``cifar100``: the same on CIFAR-100, with the papers' CIFAR-100 differences (ARD's batch 256,
  AdaAD's batchmean KL).
* ``tiny_imagenet``: Tiny ImageNet (64x64, 200 classes), crop (pad 4) + flip, ResNet-18 student,
  TRADES PreAct-ResNet-18 teacher, the method's CIFAR schedule (DGAD's ``main_tiny.py``).
* ``fmnist``: the Fashion-MNIST variant that runs here: eps 0.1, 3 attack steps of 0.05, small
  CNN student for ``FMNIST_STUDENT_EPOCHS`` = 1 epoch (SGD 0.05, cosine, wd 2e-4), the
  quickstart's TRADES teacher (small CNN, 2 epochs): the same budget for every method, chosen
  so that the results table (15 students, each evaluated with PGD, CW and AutoAttack) runs in
  under 3 hours on 2 CPU cores.
* ``smoke``: the ``fmnist`` variant shrunk to seconds on synthetic data (tests).

Every setting's config also runs on synthetic data of the same shape with
``--config.dataset=mock --config.steps=2`` (a smoke run; see ``config.smoke_limits``).
"""

from robust_distill import config as C

FMNIST_EPS = 0.1
FMNIST_STUDENT_EPOCHS = 1.0
CIFAR_EPS = 8 / 255
# The papers' settings: name -> dataset and the robust teacher's architecture.
PAPER_SETTINGS = {
    "cifar10": dict(dataset="cifar10", teacher_model="wrn34_10"),
    "cifar100": dict(dataset="cifar100", teacher_model="wrn34_10"),
    "tiny_imagenet": dict(dataset="tiny_imagenet", teacher_model="preact_resnet18"),
}
SETTINGS = ("",) + tuple(PAPER_SETTINGS) + ("fmnist", "smoke")


def _paper(arg: str):
  """The paper setting of ``arg`` ('' = cifar10), or None for the short settings."""
  return PAPER_SETTINGS["cifar10" if arg == "" else arg] if arg in SETTINGS[:4] else None


def clean_teacher_stage(arg: str):
  """A naturally trained teacher (no attack), CE with label smoothing 0.5 as AGKD-BML's
  teacher ('natural-training-lbs05-100150' in its code; the schedule and weight decay are
  [INFERRED]: 200 epochs, decays at 100 and 150, wd 2e-4)."""
  no_attack = dict(steps=0, init="none")
  if _paper(arg):
    return C.stage(model="wrn28_10", epochs=200, batch_size=128, lr=0.1, weight_decay=2e-4,
                   schedule="piecewise", decay_epochs=(100, 150),
                   model_kwargs=dict(mean=(0.5,) * 3, std=(0.5,) * 3),
                   loss=dict(ce_clean=1.0, label_smoothing=0.5),
                   attack_cfg=C.attack(eps=CIFAR_EPS, **no_attack))
  return C.stage(model="small_cnn", epochs=2, batch_size=128, lr=0.05, weight_decay=2e-4,
                 schedule="cosine", loss=dict(ce_clean=1.0, label_smoothing=0.5),
                 attack_cfg=C.attack(eps=FMNIST_EPS, **no_attack))


def teacher_stage(arg: str):
  """The shared robust teacher: TRADES (beta 6), with TRADES's CIFAR-10 schedule."""
  paper = _paper(arg)
  if paper:
    return C.stage(model=paper["teacher_model"], epochs=76, batch_size=128, lr=0.1,
                   weight_decay=2e-4, schedule="piecewise", decay_epochs=(75,),
                   loss=dict(ce_clean=1.0, trades_kl=6.0),
                   attack_cfg=C.attack(eps=CIFAR_EPS, step_size=0.007, steps=10,
                                       objective="kl_self", init="normal"))
  return C.stage(model="small_cnn", epochs=2, batch_size=128, lr=0.05, weight_decay=2e-4,
                 schedule="cosine", loss=dict(ce_clean=1.0, trades_kl=6.0),
                 attack_cfg=C.attack(eps=FMNIST_EPS, step_size=0.5 * FMNIST_EPS, steps=3,
                                     objective="kl_self", init="normal"))


def build(arg: str, *, loss: dict, objective: str, init: str = "uniform", bn_mode: str = "eval",
         teacher: str = "none", awp: dict | None = None, cifar: dict | None = None,
         temperature: float = 1.0, teacher_kind: str = "robust", init_from: str = ""):
  """A full config for a method recipe.

  Args:
    arg: '', 'fmnist' or 'smoke' (see the module docstring).
    loss: the student's loss weights and options (``robust_distill.train.step.LOSS_TERMS``).
    objective, init, bn_mode: the student's training attack.
    teacher: 'none' (no teacher: PGD-AT, TRADES, MART, AWP), 'precomputed' (the teacher on
      clean inputs only) or 'online' (the teacher also sees adversarial inputs).
    awp: AWP settings ``{gamma, proxy_lr, warmup_epochs}`` or None.
    cifar: the paper's CIFAR-10 optimiser settings: epochs, lr, weight_decay, decay_epochs,
      and optionally model, model_kwargs, eps, step_size, steps.
    temperature: the student's fixed output temperature (LTD's tau_S).
    teacher_kind: 'robust' (the shared TRADES teacher) or 'clean' (a naturally trained one,
      AGKD-BML), of the same architecture as the student in the short settings.
    init_from: '' or 'teacher' (the student starts from the teacher's parameters).
  """
  if arg not in SETTINGS:
    raise ValueError(f"unknown config argument {arg!r}; valid: {list(SETTINGS)}")
  paper = _paper(arg)
  c = C.base()
  c.teacher = clean_teacher_stage(arg) if teacher_kind == "clean" else teacher_stage(arg)
  c.teacher.source = "online" if (teacher == "online" or paper) else "precomputed"
  c.teacher.flip_aware = False
  c.teacher.workdir = ""
  c.stages = ("teacher,precompute,student,eval" if teacher != "none" else "student,eval")
  if teacher == "none" or c.teacher.source == "online":
    c.stages = c.stages.replace("precompute,", "")
  if paper:
    p = dict(model="resnet18", eps=CIFAR_EPS, step_size=2 / 255, steps=10)
    p.update(cifar or {})
    c.dataset = c.data.mock_like = paper["dataset"]
    c.data.augment = "crop_flip"
    c.student = C.stage(model=p["model"], model_kwargs=p.get("model_kwargs"),
                        epochs=p["epochs"], batch_size=128, lr=p["lr"],
                        weight_decay=p["weight_decay"], schedule="piecewise",
                        decay_epochs=p["decay_epochs"], loss=loss, temperature=temperature,
                        attack_cfg=C.attack(eps=p["eps"], step_size=p["step_size"],
                                            steps=p["steps"], objective=objective, init=init,
                                            bn_mode=bn_mode))
    c.eval.eps = CIFAR_EPS
    c.eval.autoattack_n = -1
  else:
    c.dataset = c.data.mock_like = "fashion_mnist"
    c.student = C.stage(model="small_cnn", epochs=FMNIST_STUDENT_EPOCHS, batch_size=128,
                        lr=0.05, weight_decay=2e-4,
                        schedule="cosine", loss=loss, temperature=temperature,
                        attack_cfg=C.attack(eps=FMNIST_EPS, step_size=0.5 * FMNIST_EPS, steps=3,
                                            objective=objective, init=init, bn_mode=bn_mode))
    c.eval.eps = FMNIST_EPS
  if awp:
    c.student.awp.update(awp)
  c.student.init_from = init_from
  if arg == "smoke":
    shrink_to_smoke(c)
  return c

# The recipes (shared/docs/methods.md; "cifar" = the paper's CIFAR-10 optimiser settings).
# ``short_run``: values given as a fraction of the training length in the short (fmnist, smoke)
# settings, e.g. IAD's epoch-60-of-200 start; ``short_loss``: loss overrides for those settings.
_PIECEWISE_200 = dict(epochs=200, lr=0.1, weight_decay=5e-4, decay_epochs=(100, 150))
_ONE_DECAY_200 = dict(epochs=200, lr=0.1, weight_decay=2e-4, decay_epochs=(100,))
_LTD = dict(loss=dict(kd_clean=1.0, trades_kl=6.0, kd_teacher_temperature=0.25),
            objective="kl_self", init="normal", teacher="precomputed",
            cifar=dict(_PIECEWISE_200, model="wrn34_10"), short_loss=dict(trades_kl=4.0))
RECIPES = {
    "pgd_at": dict(loss=dict(ce_adv=1.0), objective="ce", cifar=_PIECEWISE_200),
    "trades": dict(loss=dict(ce_clean=1.0, trades_kl=6.0), objective="kl_self", init="normal",
                   cifar=dict(epochs=76, lr=0.1, weight_decay=2e-4, decay_epochs=(75,),
                              eps=0.031, step_size=0.007)),
    "mart": dict(loss=dict(mart_bce=1.0, mart_kl=5.0), objective="ce", init="normal",
                 cifar=dict(epochs=120, lr=0.01, weight_decay=3.5e-3, decay_epochs=(75, 90, 100),
                            eps=0.031, step_size=0.007)),
    "awp": dict(loss=dict(ce_adv=1.0), objective="ce", cifar=_PIECEWISE_200,
                awp=dict(gamma=0.01, proxy_lr=0.01, warmup_epochs=0.0)),
    "ard": dict(loss=dict(kd_adv=1.0, kd_teacher_temperature=30.0, kd_student_temperature=30.0,
                          kd_scale=900.0, kd_reduction="mean_all"),
                objective="ce", bn_mode="train", teacher="precomputed", cifar=_ONE_DECAY_200,
                settings={"cifar100": {"student.batch_size": 256}}),
    "rslad": dict(loss=dict(kd_adv=5 / 6, kd_clean=1 / 6, kd_reduction="mean_all"),
                  objective="kl_teacher", init="normal", teacher="precomputed",
                  cifar=dict(epochs=300, lr=0.1, weight_decay=2e-4, decay_epochs=(215, 260, 285))),
    "iad": dict(loss=dict(kd_adv=1.0, iad_intro=1.0, iad_beta=0.1, iad_begin=60.0),
                objective="ce", bn_mode="train", teacher="online", cifar=_ONE_DECAY_200,
                short_run={"loss.iad_begin": 0.3}),
    "adaad": dict(loss=dict(kd_adv_adv=1.0, kd_reduction="mean_all"), objective="kl_models",
                  init="normal", teacher="online", cifar=_PIECEWISE_200,
                  settings={"cifar100": {"student.loss.kd_reduction": "batchmean"}}),
    "dgad": dict(loss=dict(dgad_kd=1.0, pcr=1.0, dgad_map=1, dgad_els=1), objective="kl_models",
                 init="normal", teacher="online", cifar=_PIECEWISE_200),
    "ltd_trades": _LTD,
    "ltd_awp": dict(_LTD, awp=dict(gamma=5e-3, proxy_lr=0.1, warmup_epochs=10.0),
                    short_run={"awp.warmup_epochs": 0.05}),
    # AGKD-BML: label-smoothed CE on the forward AE (targeted to the most confusing class),
    # MART's margin and weighted KL (beta 6), attention transfer from the clean teacher for the
    # forward and the backward AE, and 2 x the BML triplet; student initialised from the teacher.
    "agkd_bml": dict(loss=dict(ce_adv=1.0, label_smoothing=0.5, mart_margin=1.0, mart_kl=6.0,
                               at_adv=1.0, at_bwd=1.0, bml_triplet=2.0),
                     objective="ce_confusing", teacher="online", teacher_kind="clean",
                     init_from="teacher",
                     cifar=dict(model="wrn28_10", model_kwargs=dict(mean=(0.5,) * 3,
                                                                    std=(0.5,) * 3),
                                epochs=200, lr=0.1, weight_decay=2e-4, decay_epochs=(100, 150))),
    "logit_manipulation": dict(loss=dict(kd_clean=1.0, kd_teacher_transform="none"),
                               objective="ce", init="none", steps=0, teacher="precomputed",
                               cifar=_PIECEWISE_200),
}


def _set(c, path: str, value) -> None:
  *blocks, key = path.split(".")
  for b in blocks:
    c = c[b]
  c[key] = value


def make(arg: str, method: str):
  """The config of ``method`` (a key of ``RECIPES``) for setting ``arg`` (``SETTINGS``)."""
  if method not in RECIPES:
    raise ValueError(f"Unknown method {method!r}; valid: {sorted(RECIPES)}")
  r = dict(RECIPES[method])
  short = {k: r.pop(k, {}) for k in ("short_run", "short_loss")}
  per_setting = r.pop("settings", {})
  steps = r.pop("steps", None)
  c = build(arg, **r)
  if steps is not None:
    c.student.attack.steps = steps
  for path, value in per_setting.get(arg, {}).items():
    _set(c, path, value)
  if not _paper(arg):
    c.student.loss.update(short["short_loss"])
    for path, frac in short["short_run"].items():
      block, key = path.split(".")
      c.student[block][key] = frac * c.student.optim.epochs
  return c


def config_fn(method: str):
  """``get_config(arg='')`` of a method's config file: ``get_config = config_fn('dgad')``."""
  def get_config(arg: str = ""):
    return make(arg, method)
  get_config.__doc__ = f"The {method} config for setting ``arg`` ({list(SETTINGS)})."
  return get_config


def setting_fn(setting: str, default: str):
  """``get_config(method=default)`` of a dataset's config file (``configs/cifar100.py:rslad``)."""
  def get_config(method: str = ""):
    return make(setting, method or default)
  get_config.__doc__ = (f"The {setting} config of ``method`` (default {default}; valid: "
                        f"{sorted(RECIPES)}).")
  return get_config


def shrink_to_smoke(c, *, mock_examples: int = 256):
  """Shrinks a Fashion-MNIST config in place to a seconds-long run on synthetic data."""
  c.dataset = "mock"
  c.data.val_size = 64
  c.data.mock_examples = mock_examples
  for s in (c.teacher, c.student):
    s.optim.epochs = 1
    s.batch_size = 64
    s.attack.steps = min(s.attack.steps, 2)
    s.model_kwargs = dict(width=8, hidden=32)
  c.eval.update(batch_size=64, pgd_steps=3, cw_steps=3, val_n=64, val_pgd_steps=2,
                autoattack_n=64, autoattack_batch_size=0, autoattack_check_n=64,
                autoattack_opts="n_iter=4,fab_iter=4,n_queries=20,n_target_classes=3")
  c.log_every = 2
  return c
