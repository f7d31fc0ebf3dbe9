"""ARD (Goldblum et al., AAAI 2020): tau^2 KL(T(x)/tau || S(x')/tau) with tau = 30, mean over
B x C (PyTorch KLDivLoss default); the attack maximises CE of the student, BatchNorm in train
mode; alpha = 1 (the CE term vanishes). The code's second lr decay is a no-op (quirk), so one
decay at epoch 100.

Reference (second-hand, LTD-class teacher, shared/docs/evaluation.md 7.3): ResNet-18 ARD,
85.04 clean / 49.49 AutoAttack.

    python -m robust_distill.main --config=configs/ard.py --workdir=runs/ard  # CIFAR-10
    python -m robust_distill.main --config=configs/ard.py:fmnist --workdir=runs/ard  # here
"""

from robust_distill import methods

get_config = methods.config_fn("ard")
