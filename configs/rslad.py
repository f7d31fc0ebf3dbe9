"""RSLAD (Zi et al., ICCV 2021): 5/6 KL(T(x) || S(x')) + 1/6 KL(T(x) || S(x)), mean over B x C;
the attack maximises KL(T(x) || S(x')) from x + 0.001 N(0, I).

Reference (second-hand, shared/docs/evaluation.md 7.3): ResNet-18 RSLAD, 83.59 clean /
52.13 AutoAttack.

    python -m robust_distill.main --config=configs/rslad.py --workdir=runs/rslad  # CIFAR-10
    python -m robust_distill.main --config=configs/rslad.py:fmnist --workdir=runs/rslad  # here
"""

from robust_distill import methods

get_config = methods.config_fn("rslad")
