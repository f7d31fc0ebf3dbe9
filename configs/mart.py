"""MART (Wang et al., ICLR 2020): boosted CE on x' plus beta x misclassification-weighted KL;
beta = 5 and lr 0.01, wd 3.5e-3 for the ResNet-18 student (the code's ResNet-18 settings).

The MART paper reports WRN-34-10 numbers; no AutoAttack number for this ResNet-18 setting is
quoted here.

    python -m robust_distill.main --config=configs/mart.py --workdir=runs/mart  # CIFAR-10
    python -m robust_distill.main --config=configs/mart.py:fmnist --workdir=runs/mart  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The mart config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="none")
  s = c.student
  s.loss.update(mart_bce=1.0, mart_kl=5.0)
  s.attack.update(objective="ce", init="normal")
  if settings.is_paper(arg):
    s.optim.update(epochs=120, lr=0.01, weight_decay=3.5e-3, decay_epochs=(75, 90, 100))
    s.attack.update(eps=0.031, step_size=0.007)
  return settings.finish(c, arg)
