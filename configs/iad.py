"""IAD-I (Zhu et al., ICLR 2022): KL(T(x) || S(x')) plus the introspection term
(1 - a_i) KL(S(x) || S(x')), a_i = p_T(x')[y]^0.1, from epoch 60 (scaled to the run length
in the fmnist variant); ARD's attack. The code does not weight the teacher term by a_i.

Reference (second-hand, docs/evaluation.md, "Published numbers"): ResNet-18 IAD, 84.33 clean /
50.09 AutoAttack.

    python -m robust_distill.main --config=configs/iad.py --workdir=runs/iad  # CIFAR-10
    python -m robust_distill.main --config=configs/iad.py:fmnist --workdir=runs/iad  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The iad config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="online")
  s = c.student
  s.loss.update(kd_adv=1.0, iad_intro=1.0, iad_beta=0.1, iad_begin=60.0)
  s.attack.update(objective="ce", bn_mode="train")
  if settings.is_paper(arg):
    s.optim.update(epochs=200, lr=0.1, weight_decay=2e-4, decay_epochs=(100,))
  else:
    s.loss.iad_begin = 0.3 * s.optim.epochs  # epoch 60 of 200, scaled to the run
  return settings.finish(c, arg)
