"""AWP on PGD-AT (Wu et al., NeurIPS 2020): the gradient of CE(S(x'), y) is taken at weights
perturbed by gamma = 0.01 along a one-step (proxy lr 0.01) ascent direction, layer-normalised.

The AWP paper reports PreAct ResNet-18 AT-AWP on CIFAR-10 near 50% AutoAttack [PAPER, not
re-verified here].

    python -m robust_distill.main --config=configs/awp.py --workdir=runs/awp  # CIFAR-10
    python -m robust_distill.main --config=configs/awp.py:fmnist --workdir=runs/awp  # here
"""

from robust_distill import methods

get_config = methods.config_fn("awp")
