"""AGKD-BML (Wang et al., ICCV 2021): attention-guided distillation from a naturally trained
teacher plus bidirectional metric learning.

Per batch: the forward AE x' is targeted at each example's most confusing class (the student's
largest wrong logit on x); the negative x2 is a clean image of that class and its backward AE
x2' is targeted back at y. Loss (official code): label-smoothed (0.5) CE on x', MART's margin
and weighted KL (beta 6), L1 between the min-max normalised attention maps of the student on
x' / x2' and the clean teacher on x / x2, and 2 x the triplet (anchor x', positive x, negative
x2', angular distance, margin 0.03, plus 1e-3 x the embeddings' mean squares). The student
starts from the teacher's weights (nat_init). Choices: --config.student.loss.bml_negative=pool
(default: a class-indexed pool of training images, like the code's per-class sampler) or
batch (a same-class image of the batch); bml_pool_size (8 images per class per batch);
at_layer (default last: the feature map that feeds the classifier).

Paper (CIFAR-10, WRN-28-10, eps 8/255): about 80 clean / 55 PGD-20 accuracy [PAPER, from
memory; no AutoAttack number is quoted here].

    python -m robust_distill.main --config=configs/agkd_bml.py --workdir=runs/agkd  # CIFAR-10
    python -m robust_distill.main --config=configs/agkd_bml.py:fmnist --workdir=runs/agkd  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The agkd_bml config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="online", teacher_kind="clean")
  s = c.student
  s.loss.update(
    ce_adv=1.0,
    label_smoothing=0.5,
    mart_margin=1.0,
    mart_kl=6.0,
    at_adv=1.0,
    at_bwd=1.0,
    bml_triplet=2.0,
  )
  s.attack.objective = "ce_confusing"
  s.init_from = "teacher"
  if settings.is_paper(arg):
    s.model = "wrn28_10"
    s.model_kwargs = dict(mean=(0.5,) * 3, std=(0.5,) * 3)
    s.optim.update(epochs=200, lr=0.1, weight_decay=2e-4, decay_epochs=(100, 150))
  return settings.finish(c, arg)
