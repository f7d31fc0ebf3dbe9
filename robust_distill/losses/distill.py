"""Distillation terms: soft-label KD with its reductions and teacher-logit transforms, DGAD's
MAP/ELS and PCR, IAD's introspection. Pure functions of arrays returning ``[batch]`` values.

Teacher logits are constants everywhere (stop-gradient); student logits carry the gradient.
"""

import jax
import jax.numpy as jnp

from robust_distill.losses.core import most_confusing_class, soft_label_kd, trades_kl

# How a per-example KD value is scaled: 'batchmean' (a true per-example KL) or 'mean_all'
# (divided by the number of classes, PyTorch's ``nn.KLDivLoss()`` default reduction, which the
# official ARD, RSLAD and AdaAD code use).
KD_REDUCTIONS = ("batchmean", "mean_all")
# Changes of the teacher's non-max logits (Seguin et al., arXiv 2108.12001), for KD.
TRANSFORMS = ("none", "nonmax_shuffle", "nonmax_mean", "nonmax_template")


def manipulate_nonmax(logits: jax.Array, mode: str, key: jax.Array | None = None) -> jax.Array:
  """Teacher logits with their non-max entries changed; the max logit and its class are kept.

  The paper publishes no code for its manipulations; these three are inferred from its text:

  * ``nonmax_shuffle``: permute the non-max logits of each example at random (needs ``key``);
  * ``nonmax_mean``: set every non-max logit to their mean;
  * ``nonmax_template``: keep each example's class ranking, replace the sorted gaps between the
    max logit and the others by their batch average.
  """
  if mode == "none":
    return logits
  if mode not in TRANSFORMS:
    raise ValueError(f"Unknown teacher transform {mode!r}; valid: {list(TRANSFORMS)}")
  b, c = logits.shape
  top = jnp.argmax(logits, -1)
  is_top = jax.nn.one_hot(top, c, dtype=bool)
  if mode == "nonmax_mean":
    mean = (jnp.sum(logits, -1) - jnp.max(logits, -1)) / (c - 1)
    return jnp.where(is_top, logits, mean[:, None])
  # Positions of the non-max classes of each example, in class order: [B, C-1].
  order = jnp.argsort(jnp.where(is_top, jnp.inf, jnp.arange(c)[None, :].astype(logits.dtype)), -1)
  pos = order[:, : c - 1]
  vals = jnp.take_along_axis(logits, pos, -1)
  if mode == "nonmax_shuffle":
    if key is None:
      raise ValueError("nonmax_shuffle needs a PRNG key")
    perm = jnp.argsort(jax.random.uniform(key, (b, c - 1)), -1)
    new_vals = jnp.take_along_axis(vals, perm, -1)
  else:  # nonmax_template: same ranking, batch-average sorted gaps below the max logit.
    gaps = jnp.max(logits, -1, keepdims=True) - vals
    template = jnp.mean(jnp.sort(gaps, -1), 0)
    rank = jnp.argsort(jnp.argsort(gaps, -1), -1)
    new_vals = jnp.max(logits, -1, keepdims=True) - template[rank]
  rows = jnp.arange(b)[:, None]
  return logits.at[rows, pos].set(new_vals)


def kd(
  teacher_logits: jax.Array,
  student_logits: jax.Array,
  *,
  teacher_temperature: float = 1.0,
  student_temperature: float = 1.0,
  scale: float = 1.0,
  reduction: str = "batchmean",
  transform: str = "none",
  key: jax.Array | None = None,
) -> jax.Array:
  r"""Soft-label distillation with the reductions and transforms of the seed methods.

  .. math:: \ell_i = \frac{s}{r} \mathrm{KL}\big(p(g(z^T_i)/\tau_T) \,\|\, p(z^S_i/\tau_S)\big)

  ``g`` is ``manipulate_nonmax(., transform)``, ``r`` = 1 (``batchmean``) or the number of
  classes (``mean_all``). ARD: ``tau_T = tau_S = 30``, ``s = 900``, ``mean_all`` (Goldblum et
  al., AAAI 2020); RSLAD: ``tau = 1``, ``mean_all`` (Zi et al., ICCV 2021); LTD: ``tau_T``
  low (0.25 here), ``tau_S = 1`` in the loss (Chen & Lee, arXiv 2111.02331).
  """
  if reduction not in KD_REDUCTIONS:
    raise ValueError(f"Unknown kd reduction {reduction!r}; valid: {list(KD_REDUCTIONS)}")
  if transform != "none":
    teacher_logits = manipulate_nonmax(teacher_logits, transform, key)
  v = soft_label_kd(
    teacher_logits,
    student_logits,
    teacher_temperature=teacher_temperature,
    student_temperature=student_temperature,
    temperature_scale=scale,
  )
  if reduction == "mean_all":
    v = v / student_logits.shape[-1]
  return v


def els_swap(logits: jax.Array, labels: jax.Array, where: jax.Array) -> jax.Array:
  """DGAD's error-corrective label swapping (Park & Min, ECCV 2024): where ``where`` is True,
  the true class's logit and the largest other logit are exchanged when the other one is
  larger, so that the true class becomes the argmax; elsewhere the logits are unchanged."""
  c = logits.shape[-1]
  onehot = jax.nn.one_hot(labels, c, dtype=bool)
  k = most_confusing_class(logits, labels)
  z_y = jnp.take_along_axis(logits, labels[:, None], -1)
  z_k = jnp.take_along_axis(logits, k[:, None], -1)
  swap = (where & (z_y[:, 0] < z_k[:, 0]))[:, None]
  onek = jax.nn.one_hot(k, c, dtype=bool)
  swapped = jnp.where(onehot, z_k, jnp.where(onek, z_y, logits))
  return jnp.where(swap, swapped, logits)


def dgad_kd(
  student_clean: jax.Array,
  student_adv: jax.Array,
  teacher_clean: jax.Array,
  teacher_adv: jax.Array,
  labels: jax.Array,
  *,
  use_map: bool = True,
  use_els: bool = True,
  **kd_options,
) -> jax.Array:
  r"""DGAD's MAP + ELS distillation (Park & Min, ECCV 2024), per example.

  .. math:: \ell_i = m_i\,\mathrm{KD}(T'(x_i), S(x_i)) + (1 - m_i)\,\mathrm{KD}(T'(x'_i), S(x'_i))

  ``m_i = [argmax T(x_i) != y_i]`` (MAP: the examples the teacher gets wrong are distilled
  clean; ``use_map=False`` sets m = 0); ``T'`` = the ELS-swapped teacher logits (on every
  adversarial example, and on the clean examples the teacher gets wrong). The batch mean is the
  official code's ``(n/bs) L_clean + ((bs - n)/bs) L_adv``. ``kd_options`` go to ``kd``.
  """
  wrong = jnp.argmax(teacher_clean, -1) != labels
  if use_els:
    teacher_clean = els_swap(teacher_clean, labels, wrong)
    teacher_adv = els_swap(teacher_adv, labels, jnp.ones_like(wrong))
  m = wrong if use_map else jnp.zeros_like(wrong)
  kd_c = kd(teacher_clean, student_clean, **kd_options)
  kd_a = kd(teacher_adv, student_adv, **kd_options)
  return jnp.where(m, kd_c, kd_a)


def pcr(student_clean: jax.Array, student_adv: jax.Array) -> jax.Array:
  r"""DGAD's predictive consistency regulariser; both sides carry the gradient, as in the code.

  .. math:: \ell_i = \tfrac{1}{C} \| p(S(x'_i)) - p(S(x_i)) \|_2^2
  """
  return jnp.mean((jax.nn.softmax(student_adv) - jax.nn.softmax(student_clean)) ** 2, -1)


def iad_introspection(
  student_clean: jax.Array,
  student_adv: jax.Array,
  teacher_adv: jax.Array,
  labels: jax.Array,
  epoch,
  *,
  beta: float = 0.1,
  begin: float = 0.0,
) -> jax.Array:
  r"""IAD's introspection term (Zhu et al., ICLR 2022; the IAD-I code), per example.

  .. math:: \ell_i = (1 - a_i)\,\mathrm{KL}(p(S(x_i)) \| p(S(x'_i))),\quad
     a_i = \mathrm{sg}(p(T(x'_i))_{y_i})^{\beta}

  ``a_i`` is the teacher's reliability on the adversarial example; before epoch ``begin`` the
  term is 0 (a_i = 1).
  """
  p_t = jax.nn.softmax(jax.lax.stop_gradient(teacher_adv))
  a = jnp.take_along_axis(p_t, labels[:, None], -1)[:, 0] ** beta
  a = jnp.where(epoch >= begin, a, 1.0)
  return (1.0 - a) * trades_kl(student_clean, student_adv)
