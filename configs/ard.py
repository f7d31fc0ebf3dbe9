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


def get_config(arg: str = ""):
  c = methods.make(
      arg,
      loss=dict(kd_adv=1.0, kd_teacher_temperature=30.0, kd_student_temperature=30.0,
                kd_scale=900.0, kd_reduction="mean_all"),
      objective="ce",
      init="uniform",
      bn_mode="train",
      teacher="precomputed",
      cifar=dict(epochs=200, lr=0.1, weight_decay=2e-4, decay_epochs=(100,)))
  return c
