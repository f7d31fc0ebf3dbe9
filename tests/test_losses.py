"""Loss values against independent NumPy computations on fixed inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import config as C, losses
from robust_distill.losses import core, terms

S = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0]], np.float32)  # student clean
A = np.array([[0.5, 1.5, -0.5, 0.2], [1.0, -0.2, 0.3, 1.1]], np.float32)  # student adv
T = np.array([[3.0, 1.0, -2.0, 0.0], [0.0, 0.0, 1.0, 2.0]], np.float32)  # teacher
Y = np.array([0, 3])


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), -1)


def test_cross_entropy_and_label_smoothing():
  want = -np.log(np_softmax(S)[np.arange(2), Y])
  np.testing.assert_allclose(core.cross_entropy(S, Y), want, rtol=1e-5)
  q = np.full((2, 4), 0.5 / 3)
  q[np.arange(2), Y] = 0.5
  want_ls = -np.sum(q * np.log(np_softmax(S)), -1)
  np.testing.assert_allclose(core.cross_entropy(S, Y, label_smoothing=0.5), want_ls, rtol=1e-5)


def test_trades_kl_matches_hand_computation():
  # By hand for row 0: p = softmax(S0), q = softmax(A0), KL = sum p log(p/q).
  want = np_kl(np_softmax(S), np_softmax(A))
  np.testing.assert_allclose(core.trades_kl(S, A), want, rtol=1e-5)
  assert np.all(want > 0)


def test_soft_label_kd_with_two_temperatures():
  tau_t, tau_s, scale = 0.5, 2.0, 4.0
  want = scale * np_kl(np_softmax(T / tau_t), np_softmax(S / tau_s))
  got = core.soft_label_kd(T, S / tau_s, teacher_temperature=tau_t, temperature_scale=scale)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_kl_divergence_handles_zero_probabilities():
  p = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
  want = -np.log(np_softmax(S[:1])[0, 0])
  np.testing.assert_allclose(core.kl_divergence(p, S[:1]), [want], rtol=1e-5)
  g = jax.grad(lambda z: core.kl_divergence(p, z).sum())(jnp.asarray(S[:1]))
  assert np.all(np.isfinite(g))


def test_cw_margin():
  want = np.array([max(0.5, -1.0, 0.0) - 2.0, max(0.1, 0.2, 0.3) - 3.0])
  np.testing.assert_allclose(core.cw_margin(S, Y), want, rtol=1e-6)


def test_reductions():
  v = jnp.array([1.0, 3.0])
  assert float(core.reduce(v)) == 2.0
  assert float(core.reduce(v, reduction="sum")) == 4.0
  assert float(core.reduce(v, reduction="mean_all", num_classes=4)) == 0.5
  assert float(core.reduce(v, weights=jnp.array([1.0, 0.0]))) == 0.5


def _total(loss_cfg, s, a, t):
  fw = terms.Forwards(
    labels=jnp.asarray(Y),
    student={"clean": jnp.asarray(s), "adv": jnp.asarray(a)},
    teacher={} if t is None else {"clean": jnp.asarray(t)},
  )
  return float(terms.total_loss(loss_cfg, fw)[0])


def test_trades_total_loss():
  cfg = C.stage(loss=dict(ce_clean=1.0, trades_kl=6.0)).loss
  want = np.mean(-np.log(np_softmax(S)[np.arange(2), Y])) + 6.0 * np.mean(
    np_kl(np_softmax(S), np_softmax(A))
  )
  np.testing.assert_allclose(_total(cfg, S, A, T), want, rtol=1e-5)


def test_ltd_total_loss():
  # LTD (default form): teacher soft labels at tau_T replace TRADES's clean CE; the student's
  # outputs are already divided by tau_S by the model wrapper.
  tau_t, tau_s = 0.5, 2.0
  cfg = C.stage(loss=dict(kd_clean=1.0, trades_kl=6.0, kd_teacher_temperature=tau_t)).loss
  s, a = S / tau_s, A / tau_s
  want = np.mean(np_kl(np_softmax(T / tau_t), np_softmax(s))) + 6.0 * np.mean(
    np_kl(np_softmax(s), np_softmax(a))
  )
  np.testing.assert_allclose(_total(cfg, s, a, T), want, rtol=1e-5)


def test_zero_weight_terms_are_not_traced():
  cfg = C.stage(loss=dict(ce_adv=1.0, kd_clean=0.0)).loss
  assert terms.active_terms(cfg) == {"ce_adv": 1.0}
  # No teacher logits at all: the zero-weight KD term is never evaluated ...
  assert np.isfinite(_total(cfg, S, A, None))
  # ... while a KD term with a weight does read them and fails without them.
  with pytest.raises(ValueError, match="teacher"):
    _total(C.stage(loss=dict(ce_adv=1.0, kd_clean=0.5)).loss, S, A, None)
  # And the train step's forward plan follows the weights: no student clean forward for PGD-AT.
  assert terms.student_inputs(cfg) == ["adv"]
  assert terms.student_inputs(C.stage(loss=dict(kd_clean=1.0, trades_kl=6.0)).loss) == [
    "clean",
    "adv",
  ]


# --- Terms for the methods issue, checked against NumPy transcriptions of the official code.


def test_mart_terms():
  p_adv, p_nat = np_softmax(A), np_softmax(S)
  other = np.array([np.argmax(np.where(np.arange(4) == Y[i], -1, p_adv[i])) for i in range(2)])
  want_bce = -np.log(p_adv[np.arange(2), Y]) - np.log(1.0001 - p_adv[np.arange(2), other] + 1e-12)
  np.testing.assert_allclose(losses.mart_boosted_ce(A, Y), want_bce, rtol=1e-5)
  kl = np.sum(p_nat * (np.log(p_nat) - np.log(p_adv + 1e-12)), -1)
  want_kl = kl * (1.0000001 - p_nat[np.arange(2), Y])
  np.testing.assert_allclose(losses.mart_weighted_kl(S, A, Y), want_kl, rtol=1e-5)


def test_attention_transfer():
  rng = np.random.default_rng(0)
  fs, ft = rng.normal(size=(2, 3, 3, 5)), rng.normal(size=(2, 3, 3, 5))

  def am(f):
    s = f.sum(-1).reshape(2, -1)
    return (s - s.min(1, keepdims=True)) / (s.max(1, keepdims=True) - s.min(1, keepdims=True))

  np.testing.assert_allclose(losses.attention_map(jnp.asarray(fs)), am(fs), rtol=1e-5, atol=1e-6)
  want = np.abs(am(fs) - am(ft)).mean(-1)
  np.testing.assert_allclose(losses.attention_transfer(fs, ft), want, rtol=1e-5)


def test_bml_triplet():
  a = np.array([[1.0, 0.0], [0.0, 2.0]])
  p = np.array([[1.0, 1.0], [0.0, 1.0]])
  n = np.array([[0.0, 1.0], [1.0, 1.0]])
  d = lambda u, v: (
    1 - np.abs((u * v).sum(-1)) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
  )
  want = np.maximum(0, 0.03 + d(a, p) - d(a, n)) + 0.001 * (
    (a**2).mean(-1) + (p**2).mean(-1) + (n**2).mean(-1)
  )
  np.testing.assert_allclose(losses.bml_triplet(a, p, n), want, rtol=1e-5)
  # Row 0: D(a,p) = 1 - 1/sqrt(2), D(a,n) = 1, so the hinge is 0 and only the L2 term is left.
  np.testing.assert_allclose(
    float(losses.bml_triplet(a, p, n)[0]), 0.001 * (0.5 + 1.0 + 0.5), rtol=1e-5
  )


def test_dlr_losses_match_formulas():
  z = np.array([[3.0, 1.0, 2.0, 0.0, -1.0], [0.5, 4.0, 1.0, 3.0, 2.0]], np.float32)
  y = np.array([0, 2])
  # Row 0: y is the top class: -(3 - 2) / (3 - 1). Row 1: -(1 - 4) / (4 - 2).
  np.testing.assert_allclose(losses.dlr(z, y), [-0.5, 1.5], rtol=1e-5)
  t = np.array([2, 3])
  # Row 0: -(3 - 2) / (3 - (1 + 0) / 2). Row 1: -(1 - 3) / (4 - (2 + 1) / 2).
  np.testing.assert_allclose(losses.dlr_targeted(z, y, t), [-1 / 2.5, 2 / 2.5], rtol=1e-5)
