"""PGD: stays in the eps-ball and in [0, 1], raises its objective, for every norm/objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import attacks, models
from robust_distill.losses import core


@pytest.fixture(scope="module")
def net():
  m = models.build("small_cnn", width=8, hidden=32, seed=1)
  m.eval()
  x = jax.random.uniform(jax.random.key(0), (16, 28, 28, 1))
  y = jnp.arange(16) % 10
  return m, x, y


def _objective_value(name, m, x_adv, y, target):
  z = m(x_adv)
  if name == "kl_models":
    return jnp.mean(core.kl_logits(2.0 * m(x_adv), z))
  return jnp.mean(attacks.OBJECTIVES[name](z, target))


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.025), ("l2", 1.5, 0.4)])
@pytest.mark.parametrize("objective", ["ce", "ce_targeted", "kl", "kl_models", "cw"])
@pytest.mark.parametrize("init", ["uniform", "normal"])
def test_pgd_in_ball_and_raises_objective(net, norm, eps, step, objective, init):
  m, x, y = net
  if objective == "kl":
    target = jax.nn.softmax(m(x))
  elif objective == "ce_targeted":
    target = (y + 1) % 10
  else:
    target = y
  fn = m if objective != "kl_models" else (lambda xa: (m(xa), 2.0 * m(xa)))
  x_adv, robust = attacks.pgd(
    fn,
    x,
    target,
    eps=eps,
    step_size=step,
    steps=10,
    objective=objective,
    norm=norm,
    init=init,
    rng=jax.random.key(3),
  )
  if objective in ("ce", "cw"):  # labelled objectives report robustness at x_adv
    np.testing.assert_array_equal(np.asarray(robust), np.asarray(jnp.argmax(m(x_adv), -1) == y))
  else:
    assert robust is None
  d = (x_adv - x).reshape(x.shape[0], -1)
  if norm == "linf":
    assert float(jnp.max(jnp.abs(d))) <= eps + 1e-6
  else:
    assert float(jnp.max(jnp.linalg.norm(d, axis=1))) <= eps + 1e-4
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  start = attacks.random_init(jax.random.key(3), x, eps=eps, norm=norm, init=init)
  before = _objective_value(objective, m, start, y, target)
  after = _objective_value(objective, m, x_adv, y, target)
  assert float(after) > float(before) + 1e-4, (before, after)


def test_zero_steps_returns_clean_when_no_init(net):
  m, x, y = net
  out, _ = attacks.pgd(m, x, y, eps=0.1, step_size=0.01, steps=0, init="none")
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_rolled_and_unrolled_loops_agree(net):
  m, x, y = net
  kw = dict(eps=0.1, step_size=0.02, steps=4, rng=jax.random.key(0))
  a = jax.jit(lambda x: attacks.pgd(m, x, y, unroll=1, **kw)[0])(x)
  b = jax.jit(lambda x: attacks.pgd(m, x, y, unroll=4, **kw)[0])(x)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert attacks.default_unroll(7) == 7  # CPU: unrolled


def test_unknown_names_are_rejected(net):
  m, x, y = net
  with pytest.raises(ValueError, match="valid"):
    attacks.pgd(m, x, y, eps=0.1, step_size=0.01, steps=1, objective="nope", rng=jax.random.key(0))
  with pytest.raises(ValueError, match="linf"):
    attacks.pgd(m, x, y, eps=0.1, step_size=0.01, steps=1, norm="l3", rng=jax.random.key(0))
