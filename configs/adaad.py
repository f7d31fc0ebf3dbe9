"""AdaAD (Huang et al., CVPR 2023): KL(T(x') || S(x')), mean over B x C, where the attack
maximises that same divergence with both models on the moving x' (online teacher).

Reference (second-hand, shared/docs/evaluation.md 7.3): ResNet-18 AdaAD, 84.74 clean /
52.79 AutoAttack.

    python -m robust_distill.main --config=configs/adaad.py --workdir=runs/adaad  # CIFAR-10
    python -m robust_distill.main --config=configs/adaad.py:fmnist --workdir=runs/adaad  # here
"""

from robust_distill import methods

get_config = methods.config_fn("adaad")
