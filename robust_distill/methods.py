"""Builder of the method configs (one file per method in configs/, each a few lines).

A method is a recipe over the loss vocabulary of ``robust_distill.train.step``: the student's
loss weights and options, its training attack (objective, init, BatchNorm mode), whether the
teacher must run online (on adversarial inputs), AWP, and the paper's CIFAR-10 schedule. This
module turns a recipe into a full config for one of three settings (the ``:ARG`` after the file):

* ``''`` (default): the paper's CIFAR-10 setting: eps 8/255, step 2/255, 10 steps, ResNet-18
  student, TRADES WRN-34-10 teacher (trained by the ``teacher`` stage, or reused with
  ``--config.teacher.workdir``), crop + flip augmentation (so the teacher runs online), SGD with
  the paper's learning rate, weight decay and schedule. An accelerator job.
* ``fmnist``: the Fashion-MNIST variant that runs here: eps 0.1, 3 attack steps of 0.05, small
  CNN student for 2 epochs (SGD 0.05, cosine, wd 2e-4), the quickstart's TRADES teacher (small
  CNN, 2 epochs): the same budget for every method, for the results table.
* ``smoke``: the ``fmnist`` variant shrunk to seconds on synthetic data (tests).
"""

from robust_distill import config as C

FMNIST_EPS = 0.1
CIFAR_EPS = 8 / 255


def teacher_stage(arg: str):
  """The shared robust teacher: TRADES (beta 6)."""
  if arg == "":
    return C.stage(model="wrn34_10", epochs=76, batch_size=128, lr=0.1, weight_decay=2e-4,
                   schedule="piecewise", decay_epochs=(75,),
                   loss=dict(ce_clean=1.0, trades_kl=6.0),
                   attack_cfg=C.attack(eps=CIFAR_EPS, step_size=0.007, steps=10,
                                       objective="kl_self", init="normal"))
  return C.stage(model="small_cnn", epochs=2, batch_size=128, lr=0.05, weight_decay=2e-4,
                 schedule="cosine", loss=dict(ce_clean=1.0, trades_kl=6.0),
                 attack_cfg=C.attack(eps=FMNIST_EPS, step_size=0.5 * FMNIST_EPS, steps=3,
                                     objective="kl_self", init="normal"))


def make(arg: str, *, loss: dict, objective: str, init: str = "uniform", bn_mode: str = "eval",
         teacher: str = "none", awp: dict | None = None, cifar: dict | None = None,
         temperature: float = 1.0):
  """A full config for a method recipe.

  Args:
    arg: '', 'fmnist' or 'smoke' (see the module docstring).
    loss: the student's loss weights and options (``robust_distill.train.step.LOSS_TERMS``).
    objective, init, bn_mode: the student's training attack.
    teacher: 'none' (no teacher: PGD-AT, TRADES, MART, AWP), 'precomputed' (the teacher on
      clean inputs only) or 'online' (the teacher also sees adversarial inputs).
    awp: AWP settings ``{gamma, proxy_lr, warmup_epochs}`` or None.
    cifar: the paper's CIFAR-10 optimiser settings: epochs, lr, weight_decay, decay_epochs,
      and optionally model, eps, step_size, steps.
    temperature: the student's fixed output temperature (LTD's tau_S).
  """
  if arg not in ("", "fmnist", "smoke"):
    raise ValueError(f"unknown config argument {arg!r}; valid: '', 'fmnist', 'smoke'")
  c = C.base()
  c.teacher = teacher_stage(arg)
  c.teacher.source = "online" if (teacher == "online" or arg == "") else "precomputed"
  c.teacher.flip_aware = False
  c.teacher.workdir = ""
  c.stages = ("teacher,precompute,student,eval" if teacher != "none" else "student,eval")
  if teacher == "none" or c.teacher.source == "online":
    c.stages = c.stages.replace("precompute,", "")
  if arg == "":
    p = dict(model="resnet18", eps=CIFAR_EPS, step_size=2 / 255, steps=10)
    p.update(cifar or {})
    c.dataset.name = "cifar10"
    c.dataset.augment = "crop_flip"
    c.student = C.stage(model=p["model"], epochs=p["epochs"], batch_size=128, lr=p["lr"],
                        weight_decay=p["weight_decay"], schedule="piecewise",
                        decay_epochs=p["decay_epochs"], loss=loss, temperature=temperature,
                        attack_cfg=C.attack(eps=p["eps"], step_size=p["step_size"],
                                            steps=p["steps"], objective=objective, init=init,
                                            bn_mode=bn_mode))
    c.eval.eps = CIFAR_EPS
    c.eval.autoattack_n = -1
  else:
    c.dataset.name = "fashion_mnist"
    c.student = C.stage(model="small_cnn", epochs=2, batch_size=128, lr=0.05, weight_decay=2e-4,
                        schedule="cosine", loss=loss, temperature=temperature,
                        attack_cfg=C.attack(eps=FMNIST_EPS, step_size=0.5 * FMNIST_EPS, steps=3,
                                            objective=objective, init=init, bn_mode=bn_mode))
    c.eval.eps = FMNIST_EPS
  if awp:
    c.student.awp.update(awp)
  if arg == "smoke":
    c.dataset.name = "mock"
    c.dataset.val_size = 64
    c.dataset.mock_examples = 256
    for s in (c.teacher, c.student):
      s.optim.epochs = 1
      s.batch_size = 64
      s.attack.steps = 2
      s.model_kwargs = dict(width=8, hidden=32)
    c.eval.update(batch_size=64, pgd_steps=2, cw_steps=2, val_n=64, val_pgd_steps=1,
                  autoattack="")
    c.log_every = 1
  return c
