"""AdaAD (Huang et al., CVPR 2023): KL(T(x') || S(x')), mean over B x C, where the attack
maximises that same divergence with both models on the moving x' (online teacher).

Reference (second-hand, docs/evaluation.md, "Published numbers"): ResNet-18 AdaAD, 84.74 clean /
52.79 AutoAttack.

    python -m robust_distill.main --config=configs/adaad.py --workdir=runs/adaad  # CIFAR-10
    python -m robust_distill.main --config=configs/adaad.py:fmnist --workdir=runs/adaad  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The adaad config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="online")
  s = c.student
  s.loss.update(kd_adv_adv=1.0, kd_reduction="mean_all")
  s.attack.update(objective="kl_models", init="normal")
  if settings.is_paper(arg):
    s.optim.update(epochs=200, lr=0.1, weight_decay=5e-4, decay_epochs=(100, 150))
    if arg == "cifar100":
      s.loss.kd_reduction = "batchmean"  # AdaAD's CIFAR-100 code
  return settings.finish(c, arg)
