"""The shared base of the method configs (``configs/<method>.py``): the settings a method runs in.

A method's config file starts from ``base(arg, ...)`` and writes its own loss, attack and
schedule on top, in plain assignments. ``arg`` (what follows ``:`` on the command line) picks
the setting:

* ``''`` or ``cifar10``: the papers' CIFAR-10 setting: eps 8/255, 10-step training attacks of
  2/255, crop + flip (so the teacher runs online), ResNet-18 student, TRADES WRN-34-10 teacher
  (trained by the ``teacher`` stage, reused with ``--config.teacher.workdir``, or imported from
  PyTorch), piecewise SGD. An accelerator job: both models compute in bfloat16
  (``ACCELERATOR_MODEL_KWARGS``).
* ``cifar100``: the same on CIFAR-100; ``tiny_imagenet``: Tiny ImageNet (64x64, 200 classes),
  with a TRADES PreAct-ResNet-18 teacher (DGAD's ``main_tiny.py``).
* ``fmnist``: the Fashion-MNIST setting that runs on a CPU: eps 0.1, 3 attack steps of 0.05,
  small-CNN student for ``FMNIST_STUDENT_EPOCHS`` epoch(s) (SGD 0.05, cosine, wd 2e-4), the
  quickstart's TRADES teacher (small CNN, 2 epochs): the same budget for every method.
* ``smoke``: ``fmnist`` shrunk to seconds on synthetic data (tests).

Every setting also runs on synthetic data of the same shape with ``--config.dataset=mock
--config.steps=2`` (a smoke run; see ``config.smoke_limits``).
"""

from robust_distill import config as C

FMNIST_EPS = 0.1
FMNIST_STUDENT_EPOCHS = 1.0
CIFAR_EPS = 8 / 255
# The papers' settings: name -> (dataset, the robust teacher's architecture).
PAPER = {
  "": ("cifar10", "wrn34_10"),
  "cifar10": ("cifar10", "wrn34_10"),
  "cifar100": ("cifar100", "wrn34_10"),
  "tiny_imagenet": ("tiny_imagenet", "preact_resnet18"),
}
SETTINGS = tuple(PAPER) + ("fmnist", "smoke")
# The models' switches in the papers' (accelerator) settings, written out so that
# --config.student.model_kwargs.remat=dots (or .dtype=float32) can change them: compute in
# bfloat16 (parameters, optimizer state, logits and losses stay float32); no rematerialisation.
ACCELERATOR_MODEL_KWARGS = dict(dtype="bfloat16", remat="none")
TEACHERS = ("none", "precomputed", "online")


def is_paper(arg: str) -> bool:
  """Whether ``arg`` is one of the papers' settings (else a short Fashion-MNIST one)."""
  if arg not in SETTINGS:
    raise ValueError(f"unknown config argument {arg!r}; valid: {list(SETTINGS)}")
  return arg in PAPER


def robust_teacher(arg: str):
  """The shared robust teacher: TRADES (beta 6), with TRADES's CIFAR-10 schedule."""
  if is_paper(arg):
    return C.stage(
      model=PAPER[arg][1], epochs=76, batch_size=128, lr=0.1, weight_decay=2e-4,
      schedule="piecewise", decay_epochs=(75,), loss=dict(ce_clean=1.0, trades_kl=6.0),
      attack_cfg=C.attack(eps=CIFAR_EPS, step_size=0.007, steps=10, objective="kl_self",
                          init="normal"),
    )  # fmt: skip
  return C.stage(
    model="small_cnn", epochs=2, batch_size=128, lr=0.05, weight_decay=2e-4, schedule="cosine",
    loss=dict(ce_clean=1.0, trades_kl=6.0),
    attack_cfg=C.attack(eps=FMNIST_EPS, step_size=0.5 * FMNIST_EPS, steps=3,
                        objective="kl_self", init="normal"),
  )  # fmt: skip


def clean_teacher(arg: str):
  """A naturally trained teacher (no attack): CE with label smoothing 0.5, as AGKD-BML's
  ('natural-training-lbs05-100150' in its code; schedule and weight decay inferred: 200 epochs,
  decays at 100 and 150, wd 2e-4)."""
  no_attack = dict(steps=0, init="none")
  if is_paper(arg):
    return C.stage(
      model="wrn28_10", epochs=200, batch_size=128, lr=0.1, weight_decay=2e-4,
      schedule="piecewise", decay_epochs=(100, 150),
      model_kwargs=dict(mean=(0.5,) * 3, std=(0.5,) * 3),
      loss=dict(ce_clean=1.0, label_smoothing=0.5),
      attack_cfg=C.attack(eps=CIFAR_EPS, **no_attack),
    )  # fmt: skip
  return C.stage(
    model="small_cnn", epochs=2, batch_size=128, lr=0.05, weight_decay=2e-4, schedule="cosine",
    loss=dict(ce_clean=1.0, label_smoothing=0.5),
    attack_cfg=C.attack(eps=FMNIST_EPS, **no_attack),
  )  # fmt: skip


def base(arg: str, *, teacher: str, teacher_kind: str = "robust"):
  """The config of setting ``arg`` before a method's own choices.

  ``teacher``: 'none' (PGD-AT, TRADES, MART, AWP), 'precomputed' (the teacher sees clean inputs
  only; in the papers' settings it still runs online, because of the random crops) or 'online'
  (it also sees adversarial inputs). ``teacher_kind``: 'robust' (the shared TRADES teacher) or
  'clean' (a naturally trained one, AGKD-BML). The student gets the setting's model, optimiser
  and 'ce' training attack; its loss weights are all 0 until the method sets them.
  """
  if teacher not in TEACHERS:
    raise ValueError(f"unknown teacher {teacher!r}; valid: {list(TEACHERS)}")
  paper = is_paper(arg)
  c = C.base()
  c.teacher = clean_teacher(arg) if teacher_kind == "clean" else robust_teacher(arg)
  c.teacher.source = "online" if (teacher == "online" or paper) else "precomputed"
  c.teacher.flip_aware = False
  c.teacher.workdir = ""
  c.teacher.topk = 0
  stages = ["teacher", "precompute", "student", "eval"]
  if teacher == "none" or c.teacher.source == "online":
    stages.remove("precompute")
  if teacher == "none":
    stages.remove("teacher")
  c.stages = ",".join(stages)
  if paper:
    c.dataset = c.data.mock_like = PAPER[arg][0]
    c.data.augment = "crop_flip"
    c.student = C.stage(
      model="resnet18", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4,
      schedule="piecewise", decay_epochs=(100, 150),
      attack_cfg=C.attack(eps=CIFAR_EPS, step_size=2 / 255, steps=10),
    )  # fmt: skip
    c.eval.eps = CIFAR_EPS
    c.eval.autoattack_n = -1
    for st in (c.teacher, c.student):  # accelerator jobs: bf16 compute, remat off (a switch)
      st.model_kwargs.update(ACCELERATOR_MODEL_KWARGS)
  else:
    c.dataset = c.data.mock_like = "fashion_mnist"
    c.student = C.stage(
      model="small_cnn", epochs=FMNIST_STUDENT_EPOCHS, batch_size=128, lr=0.05,
      weight_decay=2e-4, schedule="cosine",
      attack_cfg=C.attack(eps=FMNIST_EPS, step_size=0.5 * FMNIST_EPS, steps=3),
    )  # fmt: skip
    c.eval.eps = FMNIST_EPS
  c.student.init_from = ""
  return c


def finish(c, arg: str):
  """The last step of every method config: shrinks the ``smoke`` setting; returns ``c``."""
  if arg == "smoke":
    shrink_to_smoke(c)
  return c


def shrink_to_smoke(c, *, mock_examples: int = 256):
  """Shrinks a Fashion-MNIST config in place to a seconds-long run on synthetic data."""
  c.dataset = "mock"
  c.data.val_size = 64
  c.data.mock_examples = mock_examples
  for s in (c.teacher, c.student):
    s.optim.epochs = 1
    s.val_every_epochs = 1.0
    s.batch_size = 64
    s.attack.steps = min(s.attack.steps, 2)
    s.model_kwargs = dict(width=8, hidden=32)
  c.eval.update(
    batch_size=64, pgd_steps=3, cw_steps=3, val_n=64, val_pgd_steps=2, autoattack_n=64,
    autoattack_batch_size=0, autoattack_check_n=64,
    autoattack_opts="n_iter=4,fab_iter=4,n_queries=20,n_target_classes=3,chunk=4",
  )  # fmt: skip
  c.log_every = 2
  return c
