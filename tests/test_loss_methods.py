"""Each method's whole loss, exported from ``robust_distill.losses``, equals what the train step
computes for that method's config: on the same logits through the step's own assembly
(``terms.total_loss``), and end to end through the jitted train step with the attack switched off
(so that x' = x and every forward can be recomputed here). Plus gradient and jit checks."""

import os

from flax import nnx
import jax
from jax import test_util
import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import config as C, losses, models
from robust_distill.losses import terms
from robust_distill.train import optim, step as step_lib

from conftest import ROOT

B, NC = 6, 10


def _config(name, arg="smoke"):
  return C.load(os.path.join(ROOT, "configs", f"{name}.py:{arg}"))


def _arrays(seed=0):
  r = np.random.RandomState(seed)
  f = lambda *shape: jnp.asarray(r.randn(*shape).astype(np.float32) * 2)
  a = {k: f(B, NC) for k in ("s_clean", "s_adv", "s_bwd", "t_clean", "t_adv")}
  a["y"] = jnp.asarray(r.randint(0, NC, B))
  a["s_feat"] = {w: {"last": f(B, 3, 3, 4), "embedding": f(B, 7)} for w in ("clean", "adv", "bwd")}
  a["t_feat"] = {w: {"last": f(B, 3, 3, 4)} for w in ("clean", "neg")}
  a["valid"] = jnp.asarray([True] * (B - 1) + [False])
  return a


def _forwards(a, epoch):
  return terms.Forwards(
    labels=a["y"],
    student={"clean": a["s_clean"], "adv": a["s_adv"], "bwd": a["s_bwd"]},
    teacher={"clean": a["t_clean"], "adv": a["t_adv"]},
    student_features=a["s_feat"],
    teacher_features=a["t_feat"],
    epoch=epoch,
    neg_valid=a["valid"],
  )


def method_loss(name, loss, a, epoch):
  """The exported method function, with the options its config sets."""
  sc, sa, tc, ta, y = a["s_clean"], a["s_adv"], a["t_clean"], a["t_adv"], a["y"]
  if name in ("pgd_at", "awp"):
    return losses.pgd_at(sa, y)
  if name == "trades":
    return losses.trades(sc, sa, y, beta=loss.trades_kl)
  if name == "mart":
    return losses.mart(sc, sa, y, beta=loss.mart_kl)
  if name == "ard":
    return losses.ard(sa, tc, temperature=loss.kd_teacher_temperature)
  if name == "rslad":
    return losses.rslad(sc, sa, tc)
  if name == "iad":
    return losses.iad(sc, sa, tc, ta, y, epoch, beta=loss.iad_beta, begin=loss.iad_begin)
  if name == "adaad":
    return losses.adaad(sa, ta, reduction=loss.kd_reduction)
  if name == "dgad":
    return losses.dgad(sc, sa, tc, ta, y)
  if name in ("ltd_trades", "ltd_awp"):
    return losses.ltd(sc, sa, tc, beta=loss.trades_kl,
                      teacher_temperature=loss.kd_teacher_temperature)  # fmt: skip
  if name == "agkd_bml":
    return losses.agkd_bml(sc, sa, a["s_bwd"], y, s_features=a["s_feat"], t_features=a["t_feat"],
                           neg_valid=a["valid"])  # fmt: skip
  if name == "logit_manipulation":
    return losses.logit_kd(sc, tc, transform=loss.kd_teacher_transform)
  raise KeyError(name)


METHODS = ["adaad", "agkd_bml", "ard", "awp", "dgad", "iad", "logit_manipulation", "ltd_awp",
           "ltd_trades", "mart", "pgd_at", "rslad", "trades"]  # fmt: skip


@pytest.mark.parametrize("arg", ["fmnist", ""])
@pytest.mark.parametrize("name", METHODS)
def test_method_loss_equals_the_configs_total(name, arg):
  loss = _config(name, arg).student.loss
  a = _arrays()
  for epoch in (0.0, 100.0):  # IAD's introspection starts at iad_begin
    want = float(terms.total_loss(loss, _forwards(a, epoch))[0])
    got = float(jnp.mean(method_loss(name, loss, a, epoch)))
    np.testing.assert_allclose(got, want, rtol=2e-5, err_msg=f"{name}:{arg}")


def test_logit_kd_with_a_transform_equals_the_configs_total():
  loss = _config("logit_manipulation", "fmnist").student.loss
  loss.kd_teacher_transform = "nonmax_mean"
  a = _arrays(1)
  want = float(terms.total_loss(loss, _forwards(a, 0.0))[0])
  got = float(jnp.mean(losses.logit_kd(a["s_clean"], a["t_clean"], transform="nonmax_mean")))
  np.testing.assert_allclose(got, want, rtol=1e-5)


# Methods whose loss reads only clean and adversarial logits: checked through the train step.
STEP_METHODS = ["pgd_at", "trades", "mart", "ard", "rslad", "iad", "adaad", "dgad", "ltd_trades"]


@pytest.mark.parametrize("name", STEP_METHODS)
def test_method_loss_equals_the_train_steps_loss(name):
  cfg = _config(name)
  s = cfg.student
  s.attack.update(steps=0, init="none")  # x' = x: every forward is recomputable here
  s.model_kwargs = dict(width=4, hidden=16)
  model = models.build(s.model, **s.model_kwargs)
  tx = optim.make_optimizer(s.optim, 10)
  graphdef, state = step_lib.init_state(model, tx)
  online = C.needs_teacher(s) and cfg.teacher.source == "online"
  tg, tvars = None, None
  r = np.random.default_rng(0)
  batch = {
    "image": r.integers(0, 255, (16, 28, 28, 1), dtype=np.uint8),
    "label": r.integers(0, 10, 16).astype(np.int32),
  }
  x = jnp.asarray(batch["image"], jnp.float32) / 255.0
  if online:
    teacher = models.build(s.model, seed=1, **s.model_kwargs)
    tg, tp, ts = nnx.split(teacher, nnx.Param, nnx.BatchStat)
    tvars = (tp, ts)
    t_logits = models.make_apply(tg)(tp, ts, x, train=False)[0]
  else:
    batch["teacher_logits"] = r.normal(size=(16, 10)).astype(np.float32) * 3
    t_logits = jnp.asarray(batch["teacher_logits"])
  step = jax.jit(step_lib.make_train_step(s, graphdef, tx, teacher_graphdef=tg))
  _, metrics = step(state, batch, jax.random.key(0), tvars)
  apply = models.make_apply(graphdef, s.temperature)
  z = apply(state["params"], state["stats"], x, train=True)[0]  # batch statistics: x' = x
  a = {"s_clean": z, "s_adv": z, "t_clean": t_logits, "t_adv": t_logits,
       "y": jnp.asarray(batch["label"])}  # fmt: skip
  want = float(jnp.mean(method_loss(name, s.loss, a, 0.0)))
  np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-4, atol=1e-6, err_msg=name)


# --- gradients and jit ---------------------------------------------------------------------------

DIFFERENTIABLE = {
  "cross_entropy": lambda z, t, y: losses.cross_entropy(z, y, label_smoothing=0.1),
  "trades_kl": lambda z, t, y: losses.trades_kl(t, z),
  "kd": lambda z, t, y: losses.kd(t, z, teacher_temperature=0.5, student_temperature=2.0),
  "mart_boosted_ce": lambda z, t, y: losses.mart_boosted_ce(z, y),
  "mart_weighted_kl": lambda z, t, y: losses.mart_weighted_kl(t, z, y),
  "pcr": lambda z, t, y: losses.pcr(t, z),
  "cw_margin": lambda z, t, y: losses.cw_margin(z, y),
  "ltd": lambda z, t, y: losses.ltd(z, t, t),
  "trades": lambda z, t, y: losses.trades(z, t, y),
}


TEACHER_CONSTANT = ("kd", "ltd")


@pytest.mark.parametrize("name", sorted(DIFFERENTIABLE))
def test_gradients_match_finite_differences(name):
  fn = DIFFERENTIABLE[name]
  r = np.random.RandomState(2)
  with jax.enable_x64(True):  # float64, so that finite differences are accurate
    z, t = (jnp.asarray(r.randn(B, NC), jnp.float64) for _ in range(2))
    y = jnp.asarray(r.randint(0, NC, B))
    f = lambda z, t: jnp.sum(fn(z, t, y))
    if name in TEACHER_CONSTANT:  # t is a teacher's logits: a constant (stop-gradient)
      f, args = (lambda z: jnp.sum(fn(z, t, y))), (z,)
    else:
      args = (z, t)
    test_util.check_grads(f, args, order=1, modes=["rev"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_eager_and_jitted_losses_agree(name):
  loss = _config(name, "fmnist").student.loss
  a = _arrays(3)
  eager = np.asarray(method_loss(name, loss, a, 50.0))
  jitted = np.asarray(jax.jit(lambda a: method_loss(name, loss, a, 50.0))(a))
  assert eager.shape == (B,)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)
