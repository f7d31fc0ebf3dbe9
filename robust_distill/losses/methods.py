"""Each method's whole loss as a pure function of arrays, per example.

For a JAX project that runs its own loop: give the student's (and teacher's) logits on the
inputs the method reads, the labels and, where a schedule needs it, the epoch. The defaults are
the papers' CIFAR-10 values. The training step of this package computes the same sums from a
config (``robust_distill.losses.terms.total_loss``); a test checks that they agree for every
method's config. The adversarial inputs are the caller's: see ``robust_distill.attacks``.

Naming: ``s_clean`` / ``s_adv`` = student logits on x / x', ``t_clean`` / ``t_adv`` = teacher
logits on x / x'. Averaging the returned ``[batch]`` values gives the method's batch loss.
"""

import jax

from robust_distill.losses import core, distill, extra


def pgd_at(s_adv: jax.Array, labels: jax.Array) -> jax.Array:
  r"""PGD-AT (Madry et al., ICLR 2018): :math:`\mathrm{CE}(S(x'), y)`; AWP (Wu et al., 2020)
  uses the same loss at perturbed weights."""
  return core.cross_entropy(s_adv, labels)


def trades(s_clean, s_adv, labels, *, beta: float = 6.0) -> jax.Array:
  r"""TRADES (Zhang et al., ICML 2019): :math:`\mathrm{CE}(S(x), y) + \beta\,
  \mathrm{KL}(p(S(x)) \| p(S(x')))`."""
  return core.cross_entropy(s_clean, labels) + beta * core.trades_kl(s_clean, s_adv)


def mart(s_clean, s_adv, labels, *, beta: float = 5.0) -> jax.Array:
  r"""MART (Wang et al., ICLR 2020): boosted CE on x' plus :math:`\beta` times the
  misclassification-weighted KL."""
  return extra.mart_boosted_ce(s_adv, labels) + beta * extra.mart_weighted_kl(
    s_clean, s_adv, labels
  )


def ard(s_adv, t_clean, *, temperature: float = 30.0, reduction: str = "mean_all"):
  r"""ARD (Goldblum et al., AAAI 2020), with its code's ``alpha = 1``:
  :math:`\tau^2\,\mathrm{KL}(p(T(x)/\tau) \| p(S(x')/\tau))`, divided by C (``mean_all``)."""
  return distill.kd(
    t_clean,
    s_adv,
    teacher_temperature=temperature,
    student_temperature=temperature,
    scale=temperature**2,
    reduction=reduction,
  )


def rslad(s_clean, s_adv, t_clean, *, reduction: str = "mean_all") -> jax.Array:
  r"""RSLAD (Zi et al., ICCV 2021): :math:`\tfrac56 \mathrm{KL}(p(T(x)) \| p(S(x'))) +
  \tfrac16 \mathrm{KL}(p(T(x)) \| p(S(x)))`, each divided by C in the code (``mean_all``)."""
  return (
    distill.kd(t_clean, s_clean, reduction=reduction) / 6
    + 5 * distill.kd(t_clean, s_adv, reduction=reduction) / 6
  )


def iad(
  s_clean, s_adv, t_clean, t_adv, labels, epoch, *, beta: float = 0.1, begin: float = 60.0
) -> jax.Array:
  r"""IAD-I (Zhu et al., ICLR 2022) as configured here: KD from the teacher's clean soft
  labels on x' plus the introspection term (see ``distill.iad_introspection``)."""
  return distill.kd(t_clean, s_adv) + distill.iad_introspection(
    s_clean, s_adv, t_adv, labels, epoch, beta=beta, begin=begin
  )


def adaad(s_adv, t_adv, *, reduction: str = "mean_all") -> jax.Array:
  r"""AdaAD (Huang et al., 2023): :math:`\mathrm{KL}(p(T(x')) \| p(S(x')))` at the point x'
  that maximises the teachers' and students' discrepancy."""
  return distill.kd(t_adv, s_adv, reduction=reduction)


def dgad(
  s_clean,
  s_adv,
  t_clean,
  t_adv,
  labels,
  *,
  use_map: bool = True,
  use_els: bool = True,
  pcr_weight: float = 1.0,
) -> jax.Array:
  r"""DGAD (Park & Min, ECCV 2024): MAP + ELS distillation plus the PCR consistency term."""
  return distill.dgad_kd(
    s_clean, s_adv, t_clean, t_adv, labels, use_map=use_map, use_els=use_els
  ) + pcr_weight * distill.pcr(s_clean, s_adv)


def ltd(
  s_clean, s_adv, t_clean, *, beta: float = 6.0, teacher_temperature: float = 0.25
) -> jax.Array:
  r"""LTD in its TRADES form (Chen & Lee, arXiv 2111.02331): TRADES with the clean CE replaced
  by KD from the teacher's low-temperature soft labels,
  :math:`\mathrm{KL}(p(T(x)/\tau_T) \| p(S(x))) + \beta\,\mathrm{KL}(p(S(x)) \| p(S(x')))`.

  The student's own fixed temperature :math:`\tau_S` is part of its model: pass logits already
  divided by it (``robust_distill.models.make_apply(..., temperature)`` does). LTD-AWP uses the
  same loss at AWP-perturbed weights."""
  return distill.kd(
    t_clean, s_clean, teacher_temperature=teacher_temperature
  ) + beta * core.trades_kl(s_clean, s_adv)


def agkd_bml(
  s_clean,
  s_adv,
  s_bwd,
  labels,
  *,
  s_features,
  t_features,
  neg_valid,
  label_smoothing: float = 0.5,
  mart_beta: float = 6.0,
  triplet_weight: float = 2.0,
  layer: str = "last",
  margin: float = 0.03,
  l2_weight: float = 0.001,
) -> jax.Array:
  r"""AGKD-BML (Wang et al., ICCV 2021): label-smoothed CE and MART's margin on the forward AE
  x', MART's weighted KL, attention transfer from the clean teacher for x' (teacher on x) and
  for the backward AE x2' (teacher on the negative x2), and the BML triplet (anchor x',
  positive x, negative x2'). ``s_features`` maps 'clean' / 'adv' / 'bwd' to the student's
  feature dicts (``embedding`` and ``layer``), ``t_features`` maps 'clean' / 'neg' to the
  teacher's; ``neg_valid`` masks examples without a negative."""
  at = extra.attention_transfer
  return (
    core.cross_entropy(s_adv, labels, label_smoothing=label_smoothing)
    + extra.mart_margin(s_adv, labels)
    + mart_beta * extra.mart_weighted_kl(s_clean, s_adv, labels)
    + at(s_features["adv"][layer], t_features["clean"][layer])
    + at(s_features["bwd"][layer], t_features["neg"][layer]) * neg_valid
    + triplet_weight
    * neg_valid
    * extra.bml_triplet(
      s_features["adv"]["embedding"],
      s_features["clean"]["embedding"],
      s_features["bwd"]["embedding"],
      margin=margin,
      l2_weight=l2_weight,
    )
  )


def logit_kd(s_clean, t_clean, *, transform: str = "none", key=None) -> jax.Array:
  r"""Clean-input KD from manipulated non-max teacher logits (Seguin et al., arXiv
  2108.12001): :math:`\mathrm{KL}(p(g(T(x))) \| p(S(x)))`, ``g`` = ``transform``."""
  return distill.kd(t_clean, s_clean, transform=transform, key=key)
