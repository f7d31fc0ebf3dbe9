"""IAD-I (Zhu et al., ICLR 2022): KL(T(x) || S(x')) plus the introspection term
(1 - a_i) KL(S(x) || S(x')), a_i = p_T(x')[y]^0.1, from epoch 60 (scaled to the run length
in the fmnist variant); ARD's attack. The code does not weight the teacher term by a_i.

Reference (second-hand, shared/docs/evaluation.md 7.3): ResNet-18 IAD, 84.33 clean /
50.09 AutoAttack.

    python -m robust_distill.main --config=configs/iad.py --workdir=runs/iad  # CIFAR-10
    python -m robust_distill.main --config=configs/iad.py:fmnist --workdir=runs/iad  # here
"""

from robust_distill import methods


def get_config(arg: str = ""):
  c = methods.make(
      arg,
      loss=dict(kd_adv=1.0, iad_intro=1.0, iad_beta=0.1, iad_begin=60.0),
      objective="ce",
      init="uniform",
      bn_mode="train",
      teacher="online",
      cifar=dict(epochs=200, lr=0.1, weight_decay=2e-4, decay_epochs=(100,)))
  if arg:  # the paper's epoch-60 start, scaled to the 2-epoch run (60/200 of training)
    c.student.loss.iad_begin = 0.3 * c.student.optim.epochs
  return c
