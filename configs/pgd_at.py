"""PGD-AT (Madry et al., ICLR 2018): CE on PGD adversarial examples; no teacher.

Paper-setting reference (second-hand, shared/docs/evaluation.md 7.3): ResNet-18 PGD-AT on
CIFAR-10, 82.78 clean / 44.63 AutoAttack.

    python -m robust_distill.main --config=configs/pgd_at.py --workdir=runs/pgd_at  # CIFAR-10
    python -m robust_distill.main --config=configs/pgd_at.py:fmnist --workdir=runs/pgd_at  # here
"""

from robust_distill import methods

get_config = methods.config_fn("pgd_at")
