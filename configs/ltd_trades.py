"""LTD with TRADES (Chen & Lee, arXiv 2111.02331): TRADES with its clean CE replaced by
KL(softmax(T(x)/tau_T) || softmax(S(x))) at a low teacher temperature tau_T = 0.25 (inferred;
see configs/fmnist_ltd.py for the choices); beta 6 on CIFAR-10.

RobustBench Chen2021LTD_WRN34_10 (LTD with AWP, CIFAR-10): 85.21 clean / 56.94 AutoAttack.

    python -m robust_distill.main --config=configs/ltd_trades.py --workdir=runs/ltd_trades  # CIFAR-10
    python -m robust_distill.main --config=configs/ltd_trades.py:fmnist --workdir=runs/ltd_trades  # here
"""

from robust_distill import methods

get_config = methods.config_fn("ltd_trades")
