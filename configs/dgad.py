"""DGAD (Park & Min, ECCV 2024): misclassification-aware partitioning (clean distillation where
the teacher is wrong on x, adversarial elsewhere), error-corrective label swapping of the
teacher logits, predictive consistency MSE(p(S(x')), p(S(x))); AdaAD's attack. Ablation
switches: --config.student.loss.dgad_map=0, dgad_els=0, pcr=0.

The DGAD paper reports ResNet-18 CIFAR-10 numbers; no AutoAttack number is quoted here
(shared/docs/evaluation.md 7.3 found none).

    python -m robust_distill.main --config=configs/dgad.py --workdir=runs/dgad  # CIFAR-10
    python -m robust_distill.main --config=configs/dgad.py:fmnist --workdir=runs/dgad  # here
"""

from robust_distill import methods

get_config = methods.config_fn("dgad")
