"""Per-example loss functions (optax style: pure, unreduced, return shape ``[batch]``).

Conventions: ``logits`` are ``[batch, classes]`` floats; ``labels`` are integer class ids;
probability targets come first in KL divergences, written ``KL(P || Q) = sum_c P_c (log P_c -
log Q_c)`` with ``P`` the target and ``Q`` the model being trained (PyTorch's
``F.kl_div(log Q, P)``). Reductions (mean over the batch, the ``mean_all`` ``/C`` quirk of
``nn.KLDivLoss()``) are applied by the caller; see ``reduce``.
"""

import jax
import jax.numpy as jnp


def _others(values: jax.Array, labels: jax.Array) -> jax.Array:
  """``values`` with the true class's entry set to -inf."""
  onehot = jax.nn.one_hot(labels, values.shape[-1], dtype=bool)
  return jnp.where(onehot, -jnp.inf, values)


def largest_other_logit(logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""The largest entry among the wrong classes, ``max_{j != y} z_j``, per example.

  Used by the CW margin, MART's margin (on probabilities), the Square attack's margin and
  DGAD's label swap. Works on any ``[batch, classes]`` scores.
  """
  return jnp.max(_others(logits, labels), axis=-1)


def most_confusing_class(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``argmax_{c != y} z_c``: the strongest wrong class of each example (AGKD-BML's target)."""
  return jnp.argmax(_others(logits, labels), axis=-1)


def cross_entropy(
  logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
) -> jax.Array:
  r"""Softmax cross-entropy with integer labels, optionally label-smoothed.

  .. math:: \ell_i = -\sum_c q_{ic} \log \mathrm{softmax}(z_i)_c, \quad
     q_{ic} = (1-s)\,[c = y_i] + s\,[c \ne y_i] / (C - 1)

  (the smoothing puts ``s/(C-1)`` on every wrong class, as AGKD-BML's code does; ``s = 0`` is
  the plain CE of PGD-AT, Madry et al. ICLR 2018, and the clean term of TRADES).
  """
  logp = jax.nn.log_softmax(logits, axis=-1)
  if label_smoothing == 0.0:
    return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  c = logits.shape[-1]
  onehot = jax.nn.one_hot(labels, c, dtype=logp.dtype)
  q = onehot * (1.0 - label_smoothing) + (1.0 - onehot) * label_smoothing / (c - 1)
  return -jnp.sum(q * logp, axis=-1)


def kl_divergence(target_probs: jax.Array, logits: jax.Array) -> jax.Array:
  r"""``KL(P || softmax(z))`` per example, with ``0 log 0 = 0``.

  .. math:: \ell_i = \sum_c P_{ic} (\log P_{ic} - \log \mathrm{softmax}(z_i)_c)
  """
  logq = jax.nn.log_softmax(logits, axis=-1)
  safe_logp = jnp.log(jnp.where(target_probs > 0, target_probs, 1.0))
  return jnp.sum(jnp.where(target_probs > 0, target_probs * (safe_logp - logq), 0.0), axis=-1)


def kl_logits(target_logits: jax.Array, logits: jax.Array) -> jax.Array:
  r"""``KL(softmax(t) || softmax(z))`` per example, computed from two sets of logits.

  .. math:: \ell_i = \sum_c p(t_i)_c (\log p(t_i)_c - \log p(z_i)_c)

  Gradients flow into both arguments (TRADES does not detach its clean distribution).
  """
  logp = jax.nn.log_softmax(target_logits, axis=-1)
  logq = jax.nn.log_softmax(logits, axis=-1)
  return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def trades_kl(clean_logits: jax.Array, adv_logits: jax.Array) -> jax.Array:
  r"""TRADES robust regulariser ``KL(p(f(x)) || p(f(x')))`` per example.

  Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019:
  ``L = CE(f(x), y) + beta * KL(p(f(x)) || p(f(x')))`` with the KL averaged over the batch
  (``batchmean``), beta = 6 on CIFAR-10. Neither argument is detached.
  """
  return kl_logits(clean_logits, adv_logits)


def soft_label_kd(
  teacher_logits: jax.Array,
  student_logits: jax.Array,
  *,
  teacher_temperature: float = 1.0,
  student_temperature: float = 1.0,
  temperature_scale: float = 1.0,
) -> jax.Array:
  r"""Distillation to teacher soft labels at separate teacher and student temperatures.

  .. math:: \ell_i = s \cdot \mathrm{KL}\big(\mathrm{softmax}(z^T_i/\tau_T) \,\|\,
     \mathrm{softmax}(z^S_i/\tau_S)\big)

  With ``tau_T = tau_S = tau`` and ``s = tau^2`` this is Hinton et al.'s KD (and ARD's term).
  LTD (Chen & Lee, "LTD: Low Temperature Distillation for Robust Adversarial Training", arXiv
  2111.02331) uses a *low*, fixed teacher temperature ``tau_T`` and a different fixed student
  temperature ``tau_S`` that the student keeps at test time. The teacher logits are treated as
  constants (stop-gradient).
  """
  t = jax.lax.stop_gradient(teacher_logits) / teacher_temperature
  return temperature_scale * kl_logits(t, student_logits / student_temperature)


def cw_margin(logits: jax.Array, labels: jax.Array, *, confidence: float = 0.0) -> jax.Array:
  r"""Carlini-Wagner margin ``max_{j != y} z_j - z_y`` per example (positive = misclassified).

  .. math:: \ell_i = \max_{j \ne y_i} z_{ij} - z_{i y_i}

  Maximised by the CW-inf attack (PGD on the margin, Carlini & Wagner, S&P 2017). Optionally
  clipped at ``-confidence`` from below, as in the original (kappa).
  """
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  true = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
  m = largest_other_logit(logits, labels) - true
  return jnp.maximum(m, -confidence) if confidence > 0 else m


REDUCTIONS = ("mean", "sum", "mean_all")


def reduce(
  per_example: jax.Array,
  *,
  reduction: str = "mean",
  num_classes: int = 1,
  weights: jax.Array | None = None,
) -> jax.Array:
  """Reduces per-example values to a scalar.

  ``mean`` = batchmean (sum / B); ``sum``; ``mean_all`` = sum / (B * C), PyTorch's default
  ``nn.KLDivLoss()`` reduction that ARD/RSLAD/AdaAD use (per-example KL divided by C).
  ``weights`` multiply each example first (masks, IAD/MART weights).
  """
  if weights is not None:
    per_example = per_example * weights
  if reduction == "sum":
    return jnp.sum(per_example)
  if reduction == "mean":
    return jnp.mean(per_example)
  if reduction == "mean_all":
    return jnp.mean(per_example) / num_classes
  raise ValueError(f"Unknown reduction {reduction!r}; valid: {REDUCTIONS}")
