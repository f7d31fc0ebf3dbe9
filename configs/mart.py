"""MART (Wang et al., ICLR 2020): boosted CE on x' plus beta x misclassification-weighted KL;
beta = 5 and lr 0.01, wd 3.5e-3 for the ResNet-18 student (the code's ResNet-18 settings).

The MART paper reports WRN-34-10 numbers; no AutoAttack number for this ResNet-18 setting is
quoted here.

    python -m robust_distill.main --config=configs/mart.py --workdir=runs/mart  # CIFAR-10
    python -m robust_distill.main --config=configs/mart.py:fmnist --workdir=runs/mart  # here
"""

from robust_distill import methods

get_config = methods.config_fn("mart")
