"""Every method config: its file, 2 training steps on the 8-device mesh, the training attacks
raising their objectives, AGKD-BML's backward example, AWP leaving no trace but the gradient, and
a student initialised from its teacher."""

import glob
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import config as C, losses, models, parallel, settings
from robust_distill.losses import core
from robust_distill.train import attack as train_attack, optim, step as step_lib

from conftest import ROOT

# One config file per method (configs/<method>.py); the per-dataset files (cifar10.py, ...,
# imagenet_ltd.py) are tested by test_paper_configs.py, fmnist_ltd.py by the pipeline tests,
# fmnist_study.py (the study's plan, not a method) by test_experiments.py.
METHODS = sorted(
  os.path.basename(f)[:-3]
  for f in glob.glob(os.path.join(ROOT, "configs", "*.py"))
  if os.path.basename(f)[:-3] not in ("fmnist_ltd", "imagenet_ltd", "fmnist_study")
)
# The methods of the mission: the seed papers' and the baselines'.
ALL_METHODS = [
  "adaad",
  "agkd_bml",
  "ard",
  "awp",
  "dgad",
  "iad",
  "logit_manipulation",
  "ltd_awp",
  "ltd_trades",
  "mart",
  "pgd_at",
  "rslad",
  "trades",
]


def _config(name, arg="smoke"):
  return C.load(os.path.join(ROOT, "configs", f"{name}.py:{arg}"))


def test_every_method_has_its_config_file():
  assert METHODS == ALL_METHODS
  for name in METHODS:  # each file serves every setting
    for arg in settings.SETTINGS:
      assert _config(name, arg).student.loss is not None


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_two_steps_on_8_devices(name):
  cfg = _config(name)
  C.validate(cfg)
  s = cfg.student
  mesh = parallel.make_mesh(8)
  build = lambda: models.build(s.model, **s.model_kwargs)
  tx = optim.make_optimizer(s.optim, 10)
  graphdef, state = step_lib.init_state(build(), tx)
  online = C.needs_teacher(s) and cfg.teacher.source == "online"
  tg, tvars = None, None
  if online:
    tg, tp, ts = nnx.split(
      models.build(cfg.teacher.model, seed=1, **cfg.teacher.model_kwargs), nnx.Param, nnx.BatchStat
    )
    tvars = parallel.replicate((tp, ts), mesh)
  repl = parallel.replicated(mesh)
  fn = jax.jit(
    step_lib.make_train_step(s, graphdef, tx, teacher_graphdef=tg, steps_per_epoch=1),
    out_shardings=(repl, repl),
  )
  r = np.random.default_rng(0)
  batch = {
    "image": r.integers(0, 255, (32, 28, 28, 1), dtype=np.uint8),
    "label": r.integers(0, 10, 32).astype(np.int32),
  }
  if C.needs_teacher(s) and not online:
    batch["teacher_logits"] = r.normal(size=(32, 10)).astype(np.float32)
  if C.class_pool_size(s):
    batch["pool_image"] = r.integers(0, 255, (10, C.class_pool_size(s), 28, 28, 1), dtype=np.uint8)
  state = parallel.replicate(state, mesh)
  gb = parallel.shard_batch(batch, mesh)
  for i in range(2):
    state, m = fn(state, gb, jax.random.key(i), tvars)
  m = jax.device_get(m)
  assert np.isfinite(m["loss"]), name
  assert int(state["step"]) == 2


@pytest.mark.parametrize("objective", sorted(train_attack.ATTACK_OBJECTIVES))
def test_each_training_attack_raises_its_objective(objective):
  model = models.build("small_cnn", width=8, hidden=32)
  teacher = models.build("small_cnn", seed=3, width=8, hidden=32)
  g, p, st = nnx.split(model, nnx.Param, nnx.BatchStat)
  tg, tp, ts = nnx.split(teacher, nnx.Param, nnx.BatchStat)
  apply, t_apply = models.make_apply(g), models.make_apply(tg)
  s = C.stage(
    loss=dict(ce_adv=1.0),
    attack_cfg=C.attack(eps=0.1, step_size=0.025, steps=10, objective=objective, init="normal"),
  )
  r = np.random.default_rng(1)
  x = jnp.asarray(r.uniform(size=(16, 28, 28, 1)), jnp.float32)
  y = jnp.asarray(r.integers(0, 10, 16))
  t_fn = lambda xa: t_apply(tp, ts, xa, train=False)[0]
  t_logits = t_fn(x)
  x_adv = train_attack.attack_fn(s, apply, p, st, teacher_logits=t_logits, teacher_fn=t_fn)(
    x, y, jax.random.key(0)
  )
  f = lambda v: apply(p, st, v, train=False)[0]
  obj = {
    "ce": lambda v: core.cross_entropy(f(v), y),
    "cw": lambda v: core.cw_margin(f(v), y),
    "kl_self": lambda v: core.kl_logits(f(x), f(v)),
    "kl_teacher": lambda v: core.kl_logits(t_logits, f(v)),
    "kl_models": lambda v: core.kl_logits(t_fn(v), f(v)),
    # Towards the most confusing class: its log-probability rises.
    "ce_confusing": lambda v: -core.cross_entropy(f(v), losses.most_confusing_class(f(x), y)),
  }[objective]
  start = x + 0.001 * jax.random.normal(jax.random.key(5), x.shape)
  assert float(jnp.mean(obj(x_adv))) > float(jnp.mean(obj(start)))


def test_awp_perturbation_is_restored_after_the_step():
  s = C.stage(
    loss=dict(ce_adv=1.0),
    lr=0.1,
    momentum=0.0,
    weight_decay=0.0,
    schedule="constant",
    attack_cfg=C.attack(eps=0.1, steps=0, init="none"),
  )
  s.awp.update(gamma=0.01, proxy_lr=0.01)
  model = models.build("small_cnn", width=8, hidden=32)
  tx = optim.make_optimizer(s.optim, 10)
  graphdef, state = step_lib.init_state(model, tx)
  r = np.random.default_rng(2)
  batch = {
    "image": jnp.asarray(r.integers(0, 255, (16, 28, 28, 1), dtype=np.uint8)),
    "label": jnp.asarray(r.integers(0, 10, 16).astype(np.int32)),
  }
  new, m = jax.jit(step_lib.make_train_step(s, graphdef, tx))(state, batch, jax.random.key(0), None)
  # Independent computation: v from the formula, gradient at w + v, SGD update applied to w.
  apply = models.make_apply(graphdef)
  x = batch["image"].astype(jnp.float32) / 255.0
  loss = lambda p: jnp.mean(
    core.cross_entropy(apply(p, state["stats"], x, train=True)[0], batch["label"])
  )
  w = state["params"]
  grad = jax.jit(jax.grad(loss))  # eager, the two gradients took half a minute
  g0 = grad(w)

  def v_of(wl, gl):
    wl, gl = np.asarray(wl), np.asarray(gl)
    if wl.ndim <= 1:
      return np.zeros_like(wl)
    d = 0.01 * gl
    return 0.01 * np.linalg.norm(wl) / (np.linalg.norm(d) + 1e-20) * d

  v = jax.tree.map(v_of, w, g0)
  g1 = grad(jax.tree.map(jnp.add, w, v))
  expected = jax.tree.map(lambda a, b: a - 0.1 * b, w, g1)
  for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The optimizer state is the one of a plain step with that gradient.
  _, opt_ref = tx.update(g1, tx.init(w), w)
  for a, b in zip(jax.tree.leaves(new["opt"]), jax.tree.leaves(opt_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5)
  assert float(m["awp_norm"]) > 0


def test_backward_example_moves_the_negative_towards_the_true_class():
  model = models.build("small_cnn", width=8, hidden=32)
  g, p, st = nnx.split(model, nnx.Param, nnx.BatchStat)
  apply = models.make_apply(g)
  s = C.stage(
    loss=dict(ce_adv=1.0),
    attack_cfg=C.attack(eps=0.1, step_size=0.025, steps=10, objective="ce_confusing"),
  )
  r = np.random.default_rng(3)
  x2 = jnp.asarray(r.uniform(size=(16, 28, 28, 1)), jnp.float32)
  y = jnp.asarray(r.integers(0, 10, 16))
  atk = train_attack.attack_fn(s, apply, p, st)
  x2_adv = atk(x2, y, jax.random.key(0), objective="ce_targeted", target=y)
  logp = lambda v: jnp.take_along_axis(
    jax.nn.log_softmax(apply(p, st, v, train=False)[0]), y[:, None], -1
  ).mean()
  assert float(logp(x2_adv)) > float(logp(x2))
  assert float(jnp.max(jnp.abs(x2_adv - x2))) <= 0.1 + 1e-6


def test_student_initialised_from_the_teacher():
  tx = optim.make_optimizer(C.stage().optim, 10)
  _, state = step_lib.init_state(models.build("small_cnn", width=8, hidden=32), tx)
  tg, tp, ts = nnx.split(
    models.build("small_cnn", seed=5, width=8, hidden=32), nnx.Param, nnx.BatchStat
  )
  new = step_lib.init_from(state, "teacher", {"graphdef": tg, "params": tp, "stats": ts}, tx)
  for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(tp)):
    np.testing.assert_array_equal(a, b)
  _, op, os_ = nnx.split(
    models.build("small_cnn", seed=5, width=16, hidden=32), nnx.Param, nnx.BatchStat
  )
  with pytest.raises(ValueError, match="different architectures"):
    step_lib.init_from(state, "teacher", {"graphdef": tg, "params": op, "stats": os_}, tx)
