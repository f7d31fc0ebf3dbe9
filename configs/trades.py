"""TRADES (Zhang et al., ICML 2019): CE(S(x), y) + 6 KL(S(x) || S(x')); KL attack from
x + 0.001 N(0, I); no teacher.

Paper-setting reference (second-hand, docs/evaluation.md, "Published numbers"): ResNet-18 TRADES on
CIFAR-10, 82.41 clean / 48.37 AutoAttack.

    python -m robust_distill.main --config=configs/trades.py --workdir=runs/trades  # CIFAR-10
    python -m robust_distill.main --config=configs/trades.py:fmnist --workdir=runs/trades  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The trades config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="none")
  s = c.student
  s.loss.update(ce_clean=1.0, trades_kl=6.0)
  s.attack.update(objective="kl_self", init="normal")
  if settings.is_paper(arg):
    s.optim.update(epochs=76, lr=0.1, weight_decay=2e-4, decay_epochs=(75,))
    s.attack.update(eps=0.031, step_size=0.007)
  return settings.finish(c, arg)
