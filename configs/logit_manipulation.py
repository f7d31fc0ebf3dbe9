"""Distillation without input perturbation from an adversarially trained teacher, with the
teacher's non-max logits manipulated (Seguin et al., arXiv 2108.12001; docs/methods.md
section 12, [INFERRED] details): the student sees clean inputs only and matches
KL(softmax(T'(x)) || softmax(S(x))), T' = the teacher's logits after
``student.loss.kd_teacher_transform`` ('none', 'nonmax_shuffle', 'nonmax_mean',
'nonmax_template'; see robust_distill/analysis/logits.py). Its robustness is then measured like
every other student's.

    python -m robust_distill.main --config=configs/logit_manipulation.py:fmnist --workdir=runs/lm \
        --config.student.loss.kd_teacher_transform=nonmax_shuffle
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The logit_manipulation config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="precomputed")
  s = c.student
  s.loss.update(kd_clean=1.0, kd_teacher_transform="none")
  s.attack.update(objective="ce", init="none", steps=0)  # clean inputs only
  if settings.is_paper(arg):
    s.optim.update(epochs=200, lr=0.1, weight_decay=5e-4, decay_epochs=(100, 150))
  return settings.finish(c, arg)
