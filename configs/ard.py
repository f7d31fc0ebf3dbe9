"""ARD (Goldblum et al., AAAI 2020): tau^2 KL(T(x)/tau || S(x')/tau) with tau = 30, mean over
B x C (PyTorch KLDivLoss default); the attack maximises CE of the student, BatchNorm in train
mode; alpha = 1 (the CE term vanishes). The code's second lr decay is a no-op (quirk), so one
decay at epoch 100.

Reference (second-hand, LTD-class teacher, docs/evaluation.md, "Published numbers"): ResNet-18 ARD,
85.04 clean / 49.49 AutoAttack.

    python -m robust_distill.main --config=configs/ard.py --workdir=runs/ard  # CIFAR-10
    python -m robust_distill.main --config=configs/ard.py:fmnist --workdir=runs/ard  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The ard config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="precomputed")
  s = c.student
  s.loss.update(
    kd_adv=1.0,
    kd_teacher_temperature=30.0,
    kd_student_temperature=30.0,
    kd_scale=900.0,
    kd_reduction="mean_all",
  )
  s.attack.update(objective="ce", bn_mode="train")
  if settings.is_paper(arg):
    s.optim.update(epochs=200, lr=0.1, weight_decay=2e-4, decay_epochs=(100,))
    if arg == "cifar100":
      s.batch_size = 256  # ARD's CIFAR-100 batch
  return settings.finish(c, arg)
