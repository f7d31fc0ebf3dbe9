"""The training attack of a stage: its config's objective turned into a call of
``robust_distill.attacks.pgd`` on the student, with an explicit BatchNorm mode."""

import jax

from robust_distill import attacks
from robust_distill.losses import core

# Objectives the training attack can maximise (config: attack.objective).
ATTACK_OBJECTIVES = {
  "ce": "CE(S(x'), y): PGD-AT (Madry et al. 2018)",
  "kl_self": "KL(p(S(x)) || p(S(x'))): TRADES / LTD",
  "kl_teacher": "KL(p(T(x)) || p(S(x'))): RSLAD",
  "kl_models": "KL(p(T(x')) || p(S(x'))): AdaAD / DGAD (needs an online teacher)",
  "cw": "max_{j!=y} S(x')_j - S(x')_y",
  "ce_confusing": "-CE(S(x'), m), m = argmax_{c!=y} S(x)_c: AGKD-BML's forward AE, targeted "
  "to the most confusing class",
}
# Objectives that read the teacher; 'kl_models' runs it on the moving input (online only).
TEACHER_OBJECTIVES = ("kl_teacher", "kl_models")
BN_MODES = ("eval", "train")


def attack_fn(stage_cfg, apply, params, stats, *, teacher_logits=None, teacher_fn=None):
  """``run(x, y, rng, objective=None, target=None) -> x_adv``: the stage's training attack
  (pure, jit-friendly), with the model's BatchNorm in ``attack.bn_mode``.

  ``objective`` overrides the stage's objective (AGKD-BML's backward AE uses ``ce_targeted``
  with ``target`` = the labels to move towards); for ``ce_confusing``, ``target`` is the most
  confusing class (computed from the student on x when not given).
  """
  a = stage_cfg.attack
  train_bn = a.bn_mode == "train"

  def student(xa):
    return apply(params, stats, xa, train=train_bn)[0]

  def run(x, y, rng, objective=None, target=None):
    objective = objective or a.objective
    obj, fn, tgt = objective, student, y if target is None else target
    if objective == "kl_self":
      obj, tgt = "kl", jax.nn.softmax(student(x))
    elif objective == "kl_teacher":
      obj, tgt = "kl", jax.nn.softmax(teacher_logits)
    elif objective == "kl_models":
      if teacher_fn is None:
        raise ValueError("attack.objective='kl_models' needs teacher.source='online'")
      obj, fn, tgt = "kl_models", lambda xa: (student(xa), teacher_fn(xa)), None
    elif objective == "ce_confusing":
      obj = "ce_targeted"
      tgt = core.most_confusing_class(student(x), y) if target is None else target
    x_adv, _ = attacks.pgd(
      fn,
      x,
      tgt,
      eps=a.eps,
      step_size=a.step_size,
      steps=a.steps,
      objective=obj,
      norm=a.norm,
      init=a.init,
      rng=rng,
      unroll=a.unroll if a.unroll > 0 else None,
    )
    return x_adv

  return run
