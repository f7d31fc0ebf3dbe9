"""More per-example terms of the loss vocabulary: MART, attention transfer, the BML triplet, and
AutoAttack's DLR margins. Pure functions of arrays returning ``[batch]`` values; the term
registry (``robust_distill.losses.terms``) is built on them."""

import jax
import jax.numpy as jnp

from robust_distill.losses.core import largest_other_logit


def mart_margin(adv_logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""The margin part of MART's boosted CE: the probability of the strongest wrong class pushed
  down (Wang et al., ICLR 2020, official code constants). AGKD-BML (Wang et al., ICCV 2021)
  uses it without the CE part, as its ``MART_reg``.

  .. math:: \ell_i = -\log(1.0001 - p'_{i y'_i} + 10^{-12}),\quad
     y'_i = \arg\max_{k \ne y_i} p'_{ik}
  """
  p_other = largest_other_logit(jax.nn.softmax(adv_logits, -1), labels)
  return -jnp.log(1.0001 - p_other + 1e-12)


def mart_boosted_ce(adv_logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""MART's boosted CE (Wang et al., "Improving Adversarial Robustness Requires Revisiting
  Misclassified Examples", ICLR 2020), with the constants of the official code.

  .. math:: \ell_i = \mathrm{CE}(z'_i, y_i) - \log(1.0001 - p'_{i y'_i} + 10^{-12}),\quad
     y'_i = \arg\max_{k \ne y_i} p'_{ik}
  """
  ce = -jnp.take_along_axis(jax.nn.log_softmax(adv_logits, -1), labels[:, None], -1)[:, 0]
  return ce + mart_margin(adv_logits, labels)


def mart_weighted_kl(
  clean_logits: jax.Array, adv_logits: jax.Array, labels: jax.Array
) -> jax.Array:
  r"""MART's misclassification-weighted KL, as in the official code (nothing detached).

  .. math:: \ell_i = \sum_c p_{ic}(\log p_{ic} - \log(p'_{ic} + 10^{-12}))\,
     (1.0000001 - p_{i y_i})
  """
  p = jax.nn.softmax(clean_logits, -1)
  q = jax.nn.softmax(adv_logits, -1)
  kl = jnp.sum(p * (jax.nn.log_softmax(clean_logits, -1) - jnp.log(q + 1e-12)), -1)
  p_true = jnp.take_along_axis(p, labels[:, None], -1)[:, 0]
  return kl * (1.0000001 - p_true)


def attention_map(features: jax.Array) -> jax.Array:
  r"""AGKD-BML's attention map of NHWC features: channel sum, min-max normalised per example.

  .. math:: A_i = \frac{s_i - \min s_i}{\max s_i - \min s_i},\quad s_i = \sum_c F_{i,:,:,c}
  """
  s = jnp.sum(features, -1).reshape(features.shape[0], -1)
  lo, hi = s.min(-1, keepdims=True), s.max(-1, keepdims=True)
  return (s - lo) / (hi - lo + 1e-12)


def attention_transfer(student_features: jax.Array, teacher_features: jax.Array) -> jax.Array:
  r"""Mean absolute difference of attention maps (Wang et al., "AGKD-BML", ICCV 2021); the
  teacher's map is treated as a constant.

  .. math:: \ell_i = \tfrac{1}{HW} \| A(F^S_i) - \mathrm{sg}(A(F^T_i)) \|_1
  """
  t = jax.lax.stop_gradient(attention_map(teacher_features))
  return jnp.mean(jnp.abs(attention_map(student_features) - t), -1)


def angular_distance(u: jax.Array, v: jax.Array) -> jax.Array:
  """``1 - |cos(u, v)|`` per example."""
  num = jnp.abs(jnp.sum(u * v, -1))
  den = jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1)
  return 1.0 - jnp.minimum(num, den) / (den + 1e-12)


def bml_triplet(
  anchor: jax.Array,
  positive: jax.Array,
  negative: jax.Array,
  *,
  margin: float = 0.03,
  l2_weight: float = 0.001,
) -> jax.Array:
  r"""AGKD-BML's bidirectional metric-learning triplet loss on embeddings, with its L2 term.

  .. math:: \ell_i = \max(0, m + D(a_i, p_i) - D(a_i, n_i))
     + \lambda_2 (\overline{a_i^2} + \overline{p_i^2} + \overline{n_i^2})

  ``D`` is the angular distance; the bars are means over the embedding dimensions, so the batch
  mean of ``l`` equals the official code's ``mean(a^2) + mean(p^2) + mean(n^2)`` regulariser.
  """
  hinge = jnp.maximum(
    0.0, margin + angular_distance(anchor, positive) - angular_distance(anchor, negative)
  )
  reg = jnp.mean(anchor**2, -1) + jnp.mean(positive**2, -1) + jnp.mean(negative**2, -1)
  return hinge + l2_weight * reg


def dlr(logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""AutoAttack's untargeted DLR loss (Croce & Hein, ICML 2020), maximised by APGD.

  .. math:: \ell_i = -\frac{z_{y} - \max_{j \ne y} z_j}{z_{\pi_1} - z_{\pi_3} + 10^{-12}}
  """
  srt = jnp.sort(logits, -1)
  z_y = jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
  top_is_y = jnp.argmax(logits, -1) == labels
  other = jnp.where(top_is_y, srt[:, -2], srt[:, -1])
  return -(z_y - other) / (srt[:, -1] - srt[:, -3] + 1e-12)


def dlr_targeted(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
  r"""AutoAttack's targeted DLR loss (needs at least 4 classes).

  .. math:: \ell_i = -\frac{z_{y} - z_{t}}{z_{\pi_1} - (z_{\pi_3} + z_{\pi_4})/2 + 10^{-12}}
  """
  srt = jnp.sort(logits, -1)
  z_y = jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
  z_t = jnp.take_along_axis(logits, targets[:, None], -1)[:, 0]
  return -(z_y - z_t) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)


# Where AGKD-BML's negatives (clean images of the most confusing class) come from.
NEGATIVE_SOURCES = ("pool", "batch")


def select_negatives(source: str, key, classes, x, y, pool=None):
  """AGKD-BML's negatives: for each example a clean image ``x2`` of class ``classes[i]``.

  ``source='pool'``: a uniform draw from ``pool`` (``[C, K, ...]`` images in [0, 1], K random
  training images per class that the input pipeline samples for every batch); ``'batch'``: a
  uniform draw among the examples of the same batch labelled ``classes[i]``. Returns
  ``(x2, valid)``; ``valid`` is False where the batch holds no image of that class (then ``x2``
  is the example itself and the terms that use it are masked).
  """
  if source == "pool":
    if pool is None:
      raise ValueError(
        "loss.bml_negative='pool' needs the batch's 'pool_image' (the input "
        "pipeline adds it when terms.class_pool_size(stage) > 0)"
      )
    k = jax.random.randint(key, classes.shape, 0, pool.shape[1])
    return pool[classes, k], jnp.ones(classes.shape, bool)
  if source != "batch":
    raise ValueError(f"Unknown bml_negative {source!r}; valid: {list(NEGATIVE_SOURCES)}")
  match = y[None, :] == classes[:, None]
  score = jnp.where(match, jax.random.uniform(key, match.shape), -1.0)
  j = jnp.argmax(score, -1)
  valid = jnp.any(match, -1)
  j = jnp.where(valid, j, jnp.arange(y.shape[0]))
  return x[j], valid
