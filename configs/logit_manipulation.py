"""Distillation without input perturbation from an adversarially trained teacher, with the
teacher's non-max logits manipulated (Seguin et al., arXiv 2108.12001; shared/docs/methods.md
section 12, [INFERRED] details): the student sees clean inputs only and matches
KL(softmax(T'(x)) || softmax(S(x))), T' = the teacher's logits after
``student.loss.kd_teacher_transform`` ('none', 'nonmax_shuffle', 'nonmax_mean',
'nonmax_template'; see robust_distill/analysis/logits.py). Its robustness is then measured like
every other student's.

    python -m robust_distill.main --config=configs/logit_manipulation.py:fmnist --workdir=runs/lm \
        --config.student.loss.kd_teacher_transform=nonmax_shuffle
"""

from robust_distill import methods

get_config = methods.config_fn("logit_manipulation")
