"""TRADES (Zhang et al., ICML 2019): CE(S(x), y) + 6 KL(S(x) || S(x')); KL attack from
x + 0.001 N(0, I); no teacher.

Paper-setting reference (second-hand, shared/docs/evaluation.md 7.3): ResNet-18 TRADES on
CIFAR-10, 82.41 clean / 48.37 AutoAttack.

    python -m robust_distill.main --config=configs/trades.py --workdir=runs/trades  # CIFAR-10
    python -m robust_distill.main --config=configs/trades.py:fmnist --workdir=runs/trades  # here
"""

from robust_distill import methods

get_config = methods.config_fn("trades")
