"""The jitted train step: 8-device mesh == 1-device step; online teacher; BN models; its FLOP
count."""

import os

from conftest import ROOT
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import config as C, models, parallel
from robust_distill.models import flops
from robust_distill.train import optim, step as step_lib


def _batch(n=32, shape=(28, 28, 1), seed=0):
  rng = np.random.default_rng(seed)
  return {
    "image": rng.integers(0, 255, (n,) + shape, dtype=np.uint8),
    "label": rng.integers(0, 10, n).astype(np.int32),
    "teacher_logits": rng.normal(size=(n, 10)).astype(np.float32),
  }


def _run(stage_cfg, model_fn, mesh, batch, steps=2):
  tx = optim.make_optimizer(stage_cfg.optim, 10)
  graphdef, state = step_lib.init_state(model_fn(), tx)
  state = parallel.replicate(state, mesh)
  repl = parallel.replicated(mesh)
  fn = jax.jit(
    step_lib.make_train_step(stage_cfg, graphdef, tx),
    donate_argnums=(0,),
    out_shardings=(repl, repl),
  )
  gb = parallel.shard_batch(batch, mesh)
  for _ in range(steps):
    state, metrics = fn(state, gb, jax.random.key(0), None)
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("loss", [dict(ce_adv=1.0), dict(kd_clean=1.0, trades_kl=6.0)])
def test_eight_devices_equal_one_device(loss):
  assert jax.device_count() == 8
  s = C.stage(
    loss=dict(loss, kd_teacher_temperature=0.5),
    temperature=2.0,
    attack_cfg=C.attack(eps=0.1, step_size=0.03, steps=3, objective="kl_self"),
  )
  model_fn = lambda: models.build("small_cnn", width=8, hidden=32)
  batch = _batch()
  s8, m8 = _run(s, model_fn, parallel.make_mesh(8), batch)
  s1, m1 = _run(s, model_fn, parallel.make_mesh(1), batch)
  for a, b in zip(jax.tree.leaves(s8["params"]), jax.tree.leaves(s1["params"])):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  assert int(s8["step"]) == 2


def test_batchnorm_model_step_updates_running_stats():
  s = C.stage(
    model="resnet18",
    loss=dict(ce_adv=1.0),
    attack_cfg=C.attack(eps=8 / 255, step_size=2 / 255, steps=1, bn_mode="eval"),
  )
  model_fn = lambda: models.build("resnet18", stages=(1, 1), width=8)
  tx = optim.make_optimizer(s.optim, 10)
  _, state0 = step_lib.init_state(model_fn(), tx)
  st, m = _run(s, model_fn, parallel.make_mesh(8), _batch(16, (32, 32, 3)), steps=1)
  before = jax.tree.leaves(state0["stats"])
  after = jax.tree.leaves(st["stats"])
  assert len(after) > 0 and any(not np.allclose(a, b) for a, b in zip(before, after))
  assert np.isfinite(m["loss"])


def test_online_teacher_kl_models_attack():
  s = C.stage(
    loss=dict(kd_adv=1.0),
    attack_cfg=C.attack(eps=0.1, step_size=0.03, steps=2, objective="kl_models"),
  )
  tmodel = models.build("small_cnn", width=8, hidden=32, seed=5)
  tg, tp, ts = __import__("flax").nnx.split(
    tmodel, __import__("flax").nnx.Param, __import__("flax").nnx.BatchStat
  )
  tx = optim.make_optimizer(s.optim, 10)
  graphdef, state = step_lib.init_state(models.build("small_cnn", width=8, hidden=32), tx)
  fn = jax.jit(step_lib.make_train_step(s, graphdef, tx, teacher_graphdef=tg))
  b = _batch()
  b.pop("teacher_logits")
  state, metrics = fn(state, {k: jnp.asarray(v) for k, v in b.items()}, jax.random.key(0), (tp, ts))
  assert np.isfinite(float(metrics["loss/kd_adv"]))


def test_the_online_teacher_is_divided_by_its_temperature_as_the_precompute_stores_it():
  """A teacher trained with output temperature T is the function logits / T, online and
  precomputed alike (the precompute stores apply(..., T); the step divides online logits)."""
  s = C.stage(
    loss=dict(kd_clean=1.0, kd_teacher_temperature=1.0),
    attack_cfg=C.attack(eps=0.1, step_size=0.03, steps=1, objective="ce"),
  )
  tg, tp, ts = nnx.split(models.build("small_cnn", width=8, hidden=32, seed=5), nnx.Param,
                         nnx.BatchStat)  # fmt: skip
  tx = optim.make_optimizer(s.optim, 10)
  graphdef, state = step_lib.init_state(models.build("small_cnn", width=8, hidden=32), tx)
  b = _batch(16)
  x = jnp.asarray(b["image"], jnp.float32) / 255.0
  stored = models.make_apply(tg, 2.0)(tp, ts, x, train=False)[0]  # what the precompute writes
  online = jax.jit(step_lib.make_train_step(s, graphdef, tx, teacher_graphdef=tg,
                                            teacher_temperature=2.0))  # fmt: skip
  pre = jax.jit(step_lib.make_train_step(s, graphdef, tx))
  b.pop("teacher_logits")
  batch = {k: jnp.asarray(v) for k, v in b.items()}
  _, m_online = online(state, batch, jax.random.key(0), (tp, ts))
  _, m_pre = pre(state, {**batch, "teacher_logits": stored}, jax.random.key(0), None)
  np.testing.assert_allclose(m_online["loss/kd_clean"], m_pre["loss/kd_clean"], rtol=1e-5)
  one = jax.jit(step_lib.make_train_step(s, graphdef, tx, teacher_graphdef=tg))
  _, m_t1 = one(state, batch, jax.random.key(0), (tp, ts))
  assert abs(float(m_t1["loss/kd_clean"]) - float(m_online["loss/kd_clean"])) > 1e-4


def test_trades_step_costs_its_attack_and_training_passes_and_no_more():
  """The quickstart teacher's TRADES step, by XLA's FLOP count per image: ``steps`` attack
  passes (forward + input gradient) and two training passes (clean and adversarial), and less
  than half a forward besides. The forward that sets TRADES' attack target, softmax(f(x)), is
  the clean training pass's own forward: a step that computed it twice would cost a whole
  forward more."""
  cfg = C.load(os.path.join(ROOT, "configs", "fmnist_ltd.py"))
  s = cfg.teacher
  assert s.loss.trades_kl > 0 and s.attack.objective == "kl_self" and s.attack.steps >= 1
  tx = optim.make_optimizer(s.optim, 10)
  graphdef, state = step_lib.init_state(models.build("small_cnn", width=8, hidden=32), tx)
  n = 64
  batch = {"image": jnp.zeros((n, 28, 28, 1), jnp.uint8), "label": jnp.zeros((n,), jnp.int32)}
  step = step_lib.make_train_step(s, graphdef, tx, steps_per_epoch=10)
  per_step = flops.xla_flops(step, state, batch, jax.random.key(0), None) / n
  apply = models.make_apply(graphdef)
  per = flops.per_image_flops(apply, state["params"], state["stats"], (28, 28, 1), batch=n)
  fwd = per["forward"]
  passes = s.attack.steps * per["attack"] + 2 * per["train"]
  assert passes - 0.5 * fwd < per_step < passes + 0.5 * fwd, (per_step, passes, fwd)
