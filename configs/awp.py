"""AWP on PGD-AT (Wu et al., NeurIPS 2020): the gradient of CE(S(x'), y) is taken at weights
perturbed by gamma = 0.01 along a one-step (proxy lr 0.01) ascent direction, layer-normalised.

The AWP paper reports PreAct ResNet-18 AT-AWP on CIFAR-10 near 50% AutoAttack [PAPER, not
re-verified here].

    python -m robust_distill.main --config=configs/awp.py --workdir=runs/awp  # CIFAR-10
    python -m robust_distill.main --config=configs/awp.py:fmnist --workdir=runs/awp  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The awp config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="none")
  s = c.student
  s.loss.ce_adv = 1.0
  s.attack.objective = "ce"
  s.awp.update(gamma=0.01, proxy_lr=0.01, warmup_epochs=0.0)
  if settings.is_paper(arg):
    s.optim.update(epochs=200, lr=0.1, weight_decay=5e-4, decay_epochs=(100, 150))
  return settings.finish(c, arg)
