"""RSLAD (Zi et al., ICCV 2021): 5/6 KL(T(x) || S(x')) + 1/6 KL(T(x) || S(x)), mean over B x C;
the attack maximises KL(T(x) || S(x')) from x + 0.001 N(0, I).

Reference (second-hand, docs/evaluation.md, "Published numbers"): ResNet-18 RSLAD, 83.59 clean /
52.13 AutoAttack.

    python -m robust_distill.main --config=configs/rslad.py --workdir=runs/rslad  # CIFAR-10
    python -m robust_distill.main --config=configs/rslad.py:fmnist --workdir=runs/rslad  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The rslad config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="precomputed")
  s = c.student
  s.loss.update(kd_adv=5 / 6, kd_clean=1 / 6, kd_reduction="mean_all")
  s.attack.update(objective="kl_teacher", init="normal")
  if settings.is_paper(arg):
    s.optim.update(epochs=300, lr=0.1, weight_decay=2e-4, decay_epochs=(215, 260, 285))
  return settings.finish(c, arg)
