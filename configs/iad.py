"""IAD-I (Zhu et al., ICLR 2022): KL(T(x) || S(x')) plus the introspection term
(1 - a_i) KL(S(x) || S(x')), a_i = p_T(x')[y]^0.1, from epoch 60 (scaled to the run length
in the fmnist variant); ARD's attack. The code does not weight the teacher term by a_i.

Reference (second-hand, shared/docs/evaluation.md 7.3): ResNet-18 IAD, 84.33 clean /
50.09 AutoAttack.

    python -m robust_distill.main --config=configs/iad.py --workdir=runs/iad  # CIFAR-10
    python -m robust_distill.main --config=configs/iad.py:fmnist --workdir=runs/iad  # here
"""

from robust_distill import methods

get_config = methods.config_fn("iad")
