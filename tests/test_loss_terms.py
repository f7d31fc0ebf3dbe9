"""The loss terms of the registry against NumPy transcriptions of the official formulas, and each
method config's total loss."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import config as C, losses
from robust_distill.losses import terms

from conftest import ROOT


def _config(name, arg="smoke"):
  return C.load(os.path.join(ROOT, "configs", f"{name}.py:{arg}"))


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), -1)


def _ctx(loss_cfg, *, clean, adv, t_clean, t_adv, y, epoch=0.0):
  """The loss config and the forwards of a step whose logits are given directly."""
  fw = terms.Forwards(
    labels=jnp.asarray(y),
    student={"clean": jnp.asarray(clean), "adv": jnp.asarray(adv)},
    teacher={"clean": jnp.asarray(t_clean), "adv": jnp.asarray(t_adv)},
    epoch=epoch,
  )
  return loss_cfg, fw


def _term(name, ctx):
  loss_cfg, fw = ctx
  return terms.TERMS[name].fn(fw, loss_cfg)


@pytest.fixture
def logits():
  r = np.random.RandomState(0)
  b, c = 6, 5
  y = np.array([0, 1, 2, 3, 4, 0])
  t_clean = r.randn(b, c).astype(np.float32) * 2
  t_clean[0, 3] = 10.0  # teacher wrong on example 0 (class 3 beats y = 0)
  t_clean[1, 1] = 10.0  # teacher right on example 1
  return dict(
    clean=r.randn(b, c).astype(np.float32),
    adv=r.randn(b, c).astype(np.float32),
    t_clean=t_clean,
    t_adv=r.randn(b, c).astype(np.float32) * 2,
    y=y,
  )


def _loss_cfg(**kw):
  return C.stage(loss=dict(ce_adv=1.0, **kw)).loss


def test_els_swap_matches_definition():
  z = np.array([[1.0, 5.0, 2.0], [4.0, 1.0, 0.0], [0.0, 1.0, 3.0]], np.float32)
  y = np.array([0, 0, 2])
  out = np.asarray(losses.els_swap(jnp.asarray(z), jnp.asarray(y), jnp.array([True, True, False])))
  np.testing.assert_array_equal(out[0], [5.0, 1.0, 2.0])  # true class 0 and top class 1 swapped
  np.testing.assert_array_equal(out[1], z[1])  # already correct: unchanged
  np.testing.assert_array_equal(out[2], z[2])  # not selected


@pytest.mark.parametrize("dgad_map,dgad_els", [(1, 1), (0, 1), (1, 0)])
def test_dgad_kd_matches_numpy(logits, dgad_map, dgad_els):
  d = logits
  cfg = _loss_cfg(dgad_kd=1.0, dgad_map=dgad_map, dgad_els=dgad_els)
  got = np.asarray(_term("dgad_kd", _ctx(cfg, **d)))
  wrong = d["t_clean"].argmax(-1) != d["y"]
  tc, ta = d["t_clean"].copy(), d["t_adv"].copy()
  for i in range(len(d["y"])):
    yi = d["y"][i]
    for t, sel in ((tc, wrong[i]), (ta, True)):
      k = max((c for c in range(t.shape[1]) if c != yi), key=lambda c: t[i, c])
      if dgad_els and sel and t[i, yi] < t[i, k]:
        t[i, yi], t[i, k] = t[i, k], t[i, yi]
  m = wrong if dgad_map else np.zeros_like(wrong)
  ref = np.where(m, _kl(_softmax(tc), _softmax(d["clean"])), _kl(_softmax(ta), _softmax(d["adv"])))
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  if dgad_map:
    assert wrong[0] and not wrong[1]


def test_pcr_iad_and_kd_options_match_numpy(logits):
  d = logits
  cfg = _loss_cfg(
    pcr=1.0,
    iad_intro=1.0,
    iad_beta=0.1,
    iad_begin=1.0,
    kd_adv_adv=1.0,
    kd_reduction="mean_all",
    kd_teacher_temperature=2.0,
    kd_student_temperature=3.0,
    kd_scale=9.0,
  )
  ps, pa = _softmax(d["clean"]), _softmax(d["adv"])
  got = {
    k: np.asarray(_term(k, _ctx(cfg, epoch=1.5, **d))) for k in ("pcr", "iad_intro", "kd_adv_adv")
  }
  np.testing.assert_allclose(got["pcr"], np.mean((pa - ps) ** 2, -1), rtol=1e-5)
  a = _softmax(d["t_adv"])[np.arange(6), d["y"]] ** 0.1
  np.testing.assert_allclose(got["iad_intro"], (1 - a) * _kl(ps, pa), rtol=1e-5, atol=1e-7)
  kd = 9.0 * _kl(_softmax(d["t_adv"] / 2.0), _softmax(d["adv"] / 3.0)) / 5
  np.testing.assert_allclose(got["kd_adv_adv"], kd, rtol=1e-5)
  before = np.asarray(_term("iad_intro", _ctx(cfg, epoch=0.5, **d)))
  np.testing.assert_array_equal(before, 0.0)  # a_i = 1 before iad_begin


def _total(cfg_loss, d):
  return float(terms.total_loss(*_ctx(cfg_loss, **d))[0])


def test_method_totals_match_the_official_formulas(logits):
  d = logits
  ps, pa = _softmax(d["clean"]), _softmax(d["adv"])
  pt, pta = _softmax(d["t_clean"]), _softmax(d["t_adv"])
  y, b = d["y"], len(d["y"])
  ce_adv = -np.log(pa[np.arange(b), y])
  ce_clean = -np.log(ps[np.arange(b), y])
  refs = {
    "pgd_at": ce_adv.mean(),
    "trades": ce_clean.mean() + 6 * _kl(ps, pa).mean(),
    # RSLAD: 5/6 and 1/6 of KL means over B x C.
    "rslad": 5 / 6 * _kl(pt, pa).sum() / (b * 5) + 1 / 6 * _kl(pt, ps).sum() / (b * 5),
    # ARD: tau^2 * KLDivLoss mean over B x C, tau = 30.
    "ard": 900 * _kl(_softmax(d["t_clean"] / 30), _softmax(d["adv"] / 30)).sum() / (b * 5),
    "adaad": _kl(pta, pa).sum() / (b * 5),
  }
  # MART: boosted CE + 5 * weighted KL (ResNet-18 beta).
  other = np.where(np.eye(5, dtype=bool)[y], -np.inf, pa).argmax(-1)
  bce = ce_adv - np.log(1.0001 - pa[np.arange(b), other] + 1e-12)
  wkl = np.sum(ps * (np.log(ps) - np.log(pa + 1e-12)), -1) * (1.0000001 - ps[np.arange(b), y])
  refs["mart"] = bce.mean() + 5 * wkl.mean()
  for name, ref in refs.items():
    np.testing.assert_allclose(_total(_config(name).student.loss, d), ref, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("mode", ["nonmax_shuffle", "nonmax_mean", "nonmax_template"])
def test_nonmax_manipulations_keep_the_max_logit(mode):
  z = jnp.asarray(np.random.RandomState(0).randn(8, 6), jnp.float32)
  out = np.asarray(losses.manipulate_nonmax(z, mode, jax.random.key(0)))
  zn = np.asarray(z)
  top = zn.argmax(-1)
  np.testing.assert_array_equal(out.argmax(-1), top)
  np.testing.assert_allclose(out.max(-1), zn.max(-1))
  rest = lambda a, i: np.delete(a[i], top[i])
  for i in range(8):
    if mode == "nonmax_shuffle":
      np.testing.assert_allclose(np.sort(rest(out, i)), np.sort(rest(zn, i)), rtol=1e-6)
    elif mode == "nonmax_mean":
      np.testing.assert_allclose(rest(out, i), rest(zn, i).mean(), rtol=1e-5)
    else:  # same ranking of the non-max classes, batch-average sorted gaps below the max
      np.testing.assert_array_equal(np.argsort(rest(out, i)), np.argsort(rest(zn, i)))
      template = np.mean([np.sort(zn[j].max() - rest(zn, j)) for j in range(8)], 0)
      np.testing.assert_allclose(
        np.sort(zn[i].max() - rest(out, i)), template, rtol=1e-5, atol=1e-6
      )


def _agkd_inputs(seed=0, b=6, c=5):
  """Student/teacher logits, 'last' feature maps and embeddings for the four inputs."""
  r = np.random.RandomState(seed)
  f = lambda *shape: r.randn(*shape).astype(np.float32)
  student = {
    w: {"logits": f(b, c), "last": f(b, 3, 3, 4), "embedding": f(b, 7)}
    for w in ("clean", "adv", "bwd")
  }
  teacher = {w: {"logits": f(b, c), "last": f(b, 3, 3, 4)} for w in ("clean", "neg")}
  y = r.randint(0, c, b)
  valid = np.array([True] * (b - 1) + [False])
  return student, teacher, y, valid


def _agkd_ctx(loss_cfg, student, teacher, y, valid):
  """The loss config and the forwards, looked up by input name."""
  as_j = lambda d: {k: jnp.asarray(v) for k, v in d.items()}
  fw = terms.Forwards(
    labels=jnp.asarray(y),
    student={w: jnp.asarray(v["logits"]) for w, v in student.items()},
    teacher={"clean": jnp.asarray(teacher["clean"]["logits"])},
    student_features={w: as_j(v) for w, v in student.items()},
    teacher_features={w: as_j(v) for w, v in teacher.items()},
    neg_valid=jnp.asarray(valid),
  )
  return loss_cfg, fw


def test_agkd_bml_total_matches_the_official_formula():
  """The agkd_bml config's loss against a NumPy transcription of AGKD-BML's main.py."""
  student, teacher, y, valid = _agkd_inputs()
  cfg = _config("agkd_bml").student.loss
  got = float(terms.total_loss(*_agkd_ctx(cfg, student, teacher, y, valid))[0])

  b, c = y.shape[0], 5
  pa, pn = _softmax(student["adv"]["logits"]), _softmax(student["clean"]["logits"])
  onehot = np.eye(c)[y]
  q = onehot * 0.5 + (1 - onehot) * 0.5 / (c - 1)  # label smoothing 0.5
  ls_ce = -(q * np.log(pa)).sum(-1).mean()
  y_other = np.where(onehot.astype(bool), -np.inf, pa).argmax(-1)
  margin = -np.log(1.0001 - pa[np.arange(b), y_other] + 1e-12).mean()
  kl = (pn * (np.log(pn) - np.log(pa + 1e-12))).sum(-1) * (1.0000001 - pn[np.arange(b), y])

  def am(f):
    a = f.sum(-1).reshape(b, -1)
    return (a - a.min(1, keepdims=True)) / (a.max(1, keepdims=True) - a.min(1, keepdims=True))

  at_fwd = np.abs(am(student["adv"]["last"]) - am(teacher["clean"]["last"])).mean(-1)
  at_bwd = np.abs(am(student["bwd"]["last"]) - am(teacher["neg"]["last"])).mean(-1) * valid
  a, p, n = (student[w]["embedding"] for w in ("adv", "clean", "bwd"))
  d = lambda u, v: (
    1 - np.abs((u * v).sum(-1)) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
  )
  trip = (
    np.maximum(0, 0.03 + d(a, p) - d(a, n))
    + 0.001 * ((a**2).mean(-1) + (p**2).mean(-1) + (n**2).mean(-1))
  ) * valid
  ref = ls_ce + margin + 6 * kl.mean() + at_fwd.mean() + at_bwd.mean() + 2 * trip.mean()
  np.testing.assert_allclose(got, ref, rtol=1e-5)


@pytest.mark.parametrize("source", ["pool", "batch"])
def test_negatives_are_clean_images_of_the_requested_class(source):
  r = np.random.default_rng(0)
  y = jnp.asarray(np.repeat(np.arange(4), 4))  # 16 examples, 4 of each of 4 classes
  x = jnp.asarray(y, jnp.float32)[:, None, None, None] + jnp.zeros((16, 2, 2, 1))
  pool = jnp.arange(5)[:, None, None, None, None] + jnp.zeros((5, 3, 2, 2, 1))  # image = class
  classes = jnp.asarray(r.integers(0, 4, 16))
  x2, valid = losses.select_negatives(source, jax.random.key(0), classes, x, y, pool)
  np.testing.assert_array_equal(np.asarray(x2)[:, 0, 0, 0], np.asarray(classes))
  assert bool(valid.all())
  if source == "batch":  # a class absent from the batch is masked out
    x2, valid = losses.select_negatives(source, jax.random.key(0), jnp.full((16,), 4), x, y)
    assert not bool(valid.any())
