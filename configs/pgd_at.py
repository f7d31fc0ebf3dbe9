"""PGD-AT (Madry et al., ICLR 2018): CE on PGD adversarial examples; no teacher.

Paper-setting reference (second-hand, docs/evaluation.md, "Published numbers"): ResNet-18 PGD-AT on
CIFAR-10, 82.78 clean / 44.63 AutoAttack.

    python -m robust_distill.main --config=configs/pgd_at.py --workdir=runs/pgd_at  # CIFAR-10
    python -m robust_distill.main --config=configs/pgd_at.py:fmnist --workdir=runs/pgd_at  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The pgd_at config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="none")
  s = c.student
  s.loss.ce_adv = 1.0
  s.attack.objective = "ce"
  if settings.is_paper(arg):
    s.optim.update(epochs=200, lr=0.1, weight_decay=5e-4, decay_epochs=(100, 150))
  return settings.finish(c, arg)
