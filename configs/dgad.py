"""DGAD (Park & Min, ECCV 2024): misclassification-aware partitioning (clean distillation where
the teacher is wrong on x, adversarial elsewhere), error-corrective label swapping of the
teacher logits, predictive consistency MSE(p(S(x')), p(S(x))); AdaAD's attack. Ablation
switches: --config.student.loss.dgad_map=0, dgad_els=0, pcr=0.

The DGAD paper reports ResNet-18 CIFAR-10 numbers; no AutoAttack number is quoted here
(docs/evaluation.md, "Published numbers" found none).

    python -m robust_distill.main --config=configs/dgad.py --workdir=runs/dgad  # CIFAR-10
    python -m robust_distill.main --config=configs/dgad.py:fmnist --workdir=runs/dgad  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The dgad config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="online")
  s = c.student
  s.loss.update(dgad_kd=1.0, pcr=1.0, dgad_map=1, dgad_els=1)
  s.attack.update(objective="kl_models", init="normal")
  if settings.is_paper(arg):
    s.optim.update(epochs=200, lr=0.1, weight_decay=5e-4, decay_epochs=(100, 150))
  return settings.finish(c, arg)
