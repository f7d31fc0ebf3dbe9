"""Mixed precision (``model_kwargs.dtype``) and rematerialisation (``model_kwargs.remat``)."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import config as C, models, parallel
from robust_distill.attacks import pgd
from robust_distill.train import optim, step as step_lib

# The smallest forms of each residual family that still have projection shortcuts.
TINY = {
  "resnet18": dict(stages=(1, 1), width=4),
  "preact_resnet18": dict(stages=(1, 1), width=4),
  "resnet50": dict(stages=(1, 1), width=2),
  "wide_resnet": dict(depth=10, widen=1),
}


def _x(n=4, hw=16, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, hw, hw, 3))


def _grads(name, **kw):
  m = models.build(name, num_classes=10, **TINY[name], **kw)
  g, p, st = nnx.split(m, nnx.Param, nnx.BatchStat)
  apply = models.make_apply(g)
  x, y = _x(), jnp.arange(4)

  def loss(p, st):
    out, ns = apply(p, st, x, train=True)
    return -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(4), y]), ns

  f = jax.value_and_grad(loss, has_aux=True)
  jaxpr = str(jax.make_jaxpr(f)(p, st))
  (value, stats), grads = jax.jit(f)(p, st)
  return value, grads, stats, jaxpr


# ResNet-50 and PreAct-ResNet-18 run their blocks through the same code as ResNet-18.
@pytest.mark.parametrize("name,policy", [("resnet18", "nothing"), ("wide_resnet", "dots")])
def test_remat_gives_the_same_loss_gradients_and_statistics(name, policy):
  v0, g0, s0, j0 = _grads(name)
  assert "checkpoint" not in j0 and "remat" not in j0
  v, g, s, j = _grads(name, remat=policy)
  assert "checkpoint" in j or "remat" in j  # the blocks really are rematerialised
  np.testing.assert_allclose(v, v0, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g0), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(s0), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_bfloat16_computes_in_bf16_and_keeps_float32_parameters_and_outputs():
  m = models.build("resnet18", num_classes=10, dtype="bfloat16", **TINY["resnet18"])
  g, p, st = nnx.split(m, nnx.Param, nnx.BatchStat)
  assert {a.dtype for a in jax.tree.leaves((p, st))} == {jnp.dtype(jnp.float32)}
  apply = models.make_apply(g)
  fwd = lambda x: apply(p, st, x, train=True, features=True)
  jaxpr = str(jax.make_jaxpr(fwd)(_x()))
  assert "conv_general_dilated" in jaxpr and "bf16" in jaxpr
  (logits, feats), new_stats = fwd(_x())
  assert logits.dtype == jnp.float32
  assert {a.dtype for a in jax.tree.leaves((feats, new_stats))} == {jnp.dtype(jnp.float32)}
  # The float32 model is the model as built: no bf16 anywhere.
  f32 = models.build("resnet18", num_classes=10, **TINY["resnet18"])
  g32, p32, s32 = nnx.split(f32, nnx.Param, nnx.BatchStat)
  assert "bf16" not in str(
    jax.make_jaxpr(lambda x: models.make_apply(g32)(p32, s32, x, train=True))(_x())
  )


def _step(dtype, batch):
  s = C.stage(
    model="resnet18",
    loss=dict(kd_clean=1.0, trades_kl=6.0, kd_teacher_temperature=0.25),
    attack_cfg=C.attack(eps=8 / 255, step_size=2 / 255, steps=3, objective="kl_self"),
  )
  tx = optim.make_optimizer(s.optim, 10)
  model = models.build("resnet18", num_classes=10, dtype=dtype, seed=1, **TINY["resnet18"])
  graphdef, state = step_lib.init_state(model, tx)
  mesh = parallel.make_mesh(1)
  fn = jax.jit(step_lib.make_train_step(s, graphdef, tx))
  p0 = jax.device_get(state["params"])
  new, metrics = fn(parallel.replicate(state, mesh), batch, jax.random.key(0), None)
  delta = [
    a - b for a, b in zip(jax.tree.leaves(jax.device_get(new["params"])), jax.tree.leaves(p0))
  ]
  return jax.device_get(metrics), np.concatenate([d.ravel() for d in delta])


def test_a_bfloat16_train_step_stays_close_to_the_float32_step():
  rng = np.random.default_rng(0)
  batch = {
    "image": jnp.asarray(rng.integers(0, 255, (16, 16, 16, 3), dtype=np.uint8)),
    "label": jnp.asarray(rng.integers(0, 10, 16).astype(np.int32)),
    "teacher_logits": jnp.asarray(rng.normal(size=(16, 10)).astype(np.float32)),
  }
  m32, d32 = _step("float32", batch)
  m16, d16 = _step("bfloat16", batch)
  assert m16["loss"].dtype == np.float32
  np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=2e-2)
  cosine = d16 @ d32 / (np.linalg.norm(d16) * np.linalg.norm(d32))
  assert cosine > 0.98, cosine  # the update points the same way (bf16 has 8 mantissa bits)
  assert np.linalg.norm(d16) == pytest.approx(np.linalg.norm(d32), rel=0.05)


def test_pgd_on_a_bfloat16_model_stays_in_the_eps_ball():
  m = models.build("resnet18", num_classes=10, dtype="bfloat16", **TINY["resnet18"])
  g, p, st = nnx.split(m, nnx.Param, nnx.BatchStat)
  apply = models.make_apply(g)
  logits_fn = lambda x: apply(p, st, x, train=False)[0]
  x, eps = _x(8), 8 / 255
  x_adv, _ = pgd(logits_fn, x, jnp.arange(8), eps=eps, step_size=eps / 2, steps=5,
                     rng=jax.random.key(1))  # fmt: skip
  assert x_adv.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(x_adv - x))) <= eps + 1e-6
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  assert float(jnp.max(jnp.abs(x_adv - x))) > eps / 2  # it moved


def test_unknown_dtype_or_remat_is_refused_with_its_name():
  with pytest.raises(ValueError, match="'bfloat17'.*valid"):
    models.build("resnet18", dtype="bfloat17")
  with pytest.raises(ValueError, match="'some'.*valid"):
    models.build("wrn34_10", remat="some")
  with pytest.raises(ValueError, match="'float16'"):
    models.build("small_cnn", dtype="float16")
  for name in ("resnet50", "preact_resnet18"):
    m = models.build(name, num_classes=10, remat="dots", dtype="bfloat16", **TINY[name])
    assert m.remat == "dots" and m.conv1.dtype == jnp.bfloat16 and m.head.dtype == jnp.bfloat16
