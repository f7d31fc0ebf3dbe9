"""LTD with AWP: ltd_trades plus AWP (gamma 5e-3, proxy lr 0.1, warm-up 10 epochs), as in
TRADES-AWP.

RobustBench Chen2021LTD_WRN34_10: 85.21 clean / 56.94 AutoAttack (the paper's best setting).

    python -m robust_distill.main --config=configs/ltd_awp.py --workdir=runs/ltd_awp  # CIFAR-10
    python -m robust_distill.main --config=configs/ltd_awp.py:fmnist --workdir=runs/ltd_awp  # here
"""

from robust_distill import methods

get_config = methods.config_fn("ltd_awp")
