"""AutoAttack in JAX: threat-model bounds, strength against PGD, FAB's exactness on a linear model,
Square without gradients, and the resumable, sharded evaluation loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robust_distill import attacks, parallel
from robust_distill.attacks import apgd, autoattack as aa, fab, square
from robust_distill.eval import autoattack as ev

TINY = dict(n_iter=10, fab_iter=10, n_queries=40, n_target_classes=3)


def _toy_data(n=256, classes=5, seed=0):
  r = np.random.RandomState(seed)
  means = r.uniform(0.3, 0.7, (classes, 8, 8, 1))
  y = r.randint(0, classes, n)
  x = np.clip(means[y] + 0.08 * r.randn(n, 8, 8, 1), 0, 1).astype(np.float32)
  return x, y.astype(np.int32)


def _mlp(p, x):
  h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
  return h @ p["w2"] + p["b2"]


@pytest.fixture(scope="module")
def toy():
  """A small MLP trained (clean) on separable synthetic 8x8 images: about half robust at
  eps 0.08 (PGD-20), robust at 0.05, not at 0.15."""
  x, y = _toy_data()
  r = np.random.RandomState(1)
  p = {
    "w1": jnp.asarray(r.randn(64, 32) * 0.2, jnp.float32),
    "b1": jnp.zeros(32),
    "w2": jnp.asarray(r.randn(32, 5) * 0.2, jnp.float32),
    "b2": jnp.zeros(5),
  }
  tx = optax.adam(1e-2)
  opt = tx.init(p)

  @jax.jit
  def step(p, opt):
    g = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(_mlp(q, x), y).mean())(p)
    u, opt = tx.update(g, opt)
    return optax.apply_updates(p, u), opt

  for _ in range(150):
    p, opt = step(p, opt)
  acc = float(jnp.mean(jnp.argmax(_mlp(p, x), -1) == y))
  assert acc > 0.95
  return p, jnp.asarray(x), jnp.asarray(y)


def _dist(xa, x, norm):
  v = np.asarray(xa - x).reshape(len(x), -1)
  return np.abs(v).max(1) if norm == "linf" else np.sqrt((v * v).sum(1))


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square"])
def test_attack_stays_in_ball_and_box(toy, name, norm, eps):
  p, x, y = toy
  x, y = x[:32], y[:32]
  fn = jax.jit(
    lambda x, y: aa.attack_batch(
      name,
      lambda v: _mlp(p, v),
      x,
      y,
      jnp.ones(len(y), bool),
      eps=eps,
      norm=norm,
      rng=jax.random.key(0),
      **TINY,
    )
  )
  xa, robust = fn(x, y)
  assert _dist(xa, x, norm).max() <= eps + 1e-5
  assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
  # Points reported broken are misclassified at the returned image.
  wrong = np.asarray(jnp.argmax(_mlp(p, xa), -1) != y)
  clean_ok = np.asarray(jnp.argmax(_mlp(p, x), -1) == y)
  assert (wrong[clean_ok & ~np.asarray(robust)]).all()


def test_apgd_at_least_as_strong_as_pgd20(toy):
  p, x, y = toy
  lf = lambda v: _mlp(p, v)
  eps = 0.08
  clean = np.asarray(jnp.argmax(lf(x), -1) == y)
  xp, _ = attacks.pgd(
    lf, x, y, eps=eps, step_size=2.5 * eps / 20, steps=20, objective="ce", rng=jax.random.key(1)
  )
  pgd_acc = (clean & np.asarray(jnp.argmax(lf(xp), -1) == y)).mean()
  _, r = jax.jit(
    lambda x, y: apgd.apgd(
      lf, x, y, eps=eps, loss="ce", n_iter=100, rng=jax.random.key(2), unroll=1
    )
  )(x, y)
  apgd_acc = (clean & np.asarray(r)).mean()
  assert 0.05 < pgd_acc < 0.95  # the toy model is partly robust at this eps
  assert apgd_acc <= pgd_acc


def test_apgd_checkpoints_follow_autoattack_schedule():
  is_ck, ks = apgd.checkpoint_schedule(100)
  assert list(np.nonzero(is_ck)[0]) == [21, 40, 56, 69, 79, 86, 92, 98]
  assert list(ks[is_ck]) == [22, 19, 16, 13, 10, 7, 6, 6]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_exact_minimal_perturbation_on_linear_model(norm):
  r = np.random.RandomState(3)
  w = jnp.asarray(r.randn(64, 2) * 0.1, jnp.float32)
  c = jnp.asarray([0.3, 0.0], jnp.float32)
  lf = lambda v: v.reshape(v.shape[0], -1) @ w + c
  x = jnp.asarray(0.5 + 0.02 * r.randn(16, 8, 8, 1), jnp.float32)
  z = lf(x)
  y = jnp.argmax(z, -1)
  t = 1 - y
  wd = np.asarray(w[:, 1] - w[:, 0])
  margin = np.abs(np.asarray(z[:, 1] - z[:, 0]))
  exact = margin / (np.abs(wd).sum() if norm == "linf" else np.sqrt((wd**2).sum()))
  assert exact.max() < 0.4  # the box [0, 1] does not bind: the closed form is the answer
  adv, res = jax.jit(lambda x: fab.fab_single(lf, x, y, t, norm=norm, n_iter=100))(x)
  res = np.asarray(res)
  # Never below the true minimum; within FAB's precision (eta overshoot, beta back-steps) of it.
  assert (res >= exact * (1 - 1e-5)).all()
  np.testing.assert_allclose(res, exact, rtol=1e-2)
  assert (np.asarray(jnp.argmax(lf(adv), -1)) != np.asarray(y)).all()


def _linf_projection_reference(t, w, b):
  """The minimal-L-inf box-constrained projection by brute force over the sorted caps (float64):
  radius ``lam`` lowers ``<w, .>`` by ``sum |w_i| min(lam, p_i)``, ``p_i`` the distance to the
  corner that lowers it; the corner itself where even that falls short."""
  out = np.zeros_like(t)
  for i in range(len(t)):
    ti, wi, bi = t[i], w[i], b[i]
    if wi @ ti - bi < 0:
      wi, bi = -wi, -bi
    c = wi @ ti - bi
    a = (wi < 0).astype(float)
    p = np.where(wi < 0, 1 - ti, ti)
    aw = np.abs(wi)
    if (aw * p).sum() <= c:
      lam = np.inf
    else:
      lam, prev = None, 0.0
      for cap in np.sort(p):
        if (aw * np.minimum(cap, p)).sum() >= c:
          lam = prev + (c - (aw * np.minimum(prev, p)).sum()) / aw[p > prev].sum()
          break
        prev = cap
    out[i] = (2 * a - 1) * np.minimum(lam, p) * (wi != 0)
  return out


def test_fab_linf_projection_is_the_exact_minimal_box_projection():
  r = np.random.RandomState(0)
  n, dim = 300, 50
  t = r.uniform(0, 1, (n, dim))
  t[: n // 3, :5] = r.randint(0, 2, (n // 3, 5))  # pixels on the box's faces
  w = r.randn(n, dim)
  w[:, 7] = 0.0  # a coordinate the hyperplane ignores stays put
  # offsets from "already on the plane" through "reachable" to "beyond the box" (the corner)
  b = (w * t).sum(1) + r.uniform(-1, 1, n) * np.abs(w).sum(1) * r.choice([0.0, 0.05, 0.3, 1.5], n)
  got = np.asarray(
    fab.projection_linf(*(jnp.asarray(v, jnp.float32) for v in (t, w, b))), np.float64
  )
  want = _linf_projection_reference(t, w, b)
  np.testing.assert_allclose(got, want, atol=2e-5)
  assert (got[:, 7] == 0).all()
  inside = (t + got >= -1e-6).all(1) & (t + got <= 1 + 1e-6).all(1)
  assert inside.all()
  reached = np.abs((w * (t + got)).sum(1) - b) <= 1e-3 * np.abs(w).sum(1)
  beyond = np.abs(w * np.where(w * ((w * t).sum(1) - b)[:, None] >= 0, t, 1 - t)).sum(1) <= np.abs(
    (w * t).sum(1) - b
  )
  assert (reached | beyond).all() and reached.sum() > n // 2 and beyond.sum() > 10


def test_square_needs_only_a_logits_oracle(toy):
  p, x, y = toy
  pn = jax.tree.map(np.asarray, p)

  def oracle_np(v):
    h = np.maximum(v.reshape(v.shape[0], -1) @ pn["w1"] + pn["b1"], 0)
    return (h @ pn["w2"] + pn["b2"]).astype(np.float32)

  def oracle(v):
    return jax.pure_callback(oracle_np, jax.ShapeDtypeStruct((v.shape[0], 5), jnp.float32), v)

  with pytest.raises(ValueError):  # the oracle has no gradient (no JVP rule)
    jax.grad(lambda v: oracle(v).sum())(x[:2])
  clean = np.asarray(jnp.argmax(_mlp(p, x), -1) == y)
  xa, robust, queries = jax.jit(
    lambda x, y: square.square_run(
      oracle, x, y, eps=0.15, norm="linf", n_queries=1000, rng=jax.random.key(0)
    )
  )(x, y)
  robust = np.asarray(robust)
  assert robust.sum() < 0.5 * clean.sum()  # it breaks most points
  assert (np.asarray(jnp.argmax(_mlp(p, xa), -1) != y)[clean & ~robust]).all()
  assert np.asarray(queries).max() <= 1001


def _apply(params, stats, x, *, train=False):
  del train
  return _mlp(params, x), stats


_RUNNERS = {}  # one Runner (its compiled programs) per mesh, shared by this module's runs


def _protocol(toy, tmp_path, name, mesh, **kw):
  p, x, y = toy
  images = np.asarray(np.round(np.asarray(x) * 255), np.uint8)
  p = parallel.replicate(p, mesh)
  if mesh not in _RUNNERS:
    # Chunks of 2 iterations: these runs are all compilation (35 s with the default 10, for
    # 0.3 s of attacks), and compile time grows with the straight-line code of a chunk.
    opts = aa.options(**TINY, chunk=2)
    _RUNNERS[mesh] = ev.Runner(_apply, eps=0.08, norm="linf", opts=opts, mesh=mesh)
  return ev.run_protocol(
    _RUNNERS[mesh],
    p,
    {},
    images,
    np.asarray(y),
    names=aa.resolve("standard"),
    batch_size=64,
    seed=0,
    state_path=str(tmp_path / f"{name}.npz"),
    log=lambda s: None,
    **kw,
  )


@pytest.mark.xdist_group("aa_toy")  # shares the compiled Runners of _RUNNERS
def test_interrupted_evaluation_resumes_to_the_same_result(toy, tmp_path):
  mesh = parallel.make_mesh()
  toy = (toy[0], *(a[:128] for a in toy[1:]))  # 2 batches of 64 per attack
  full = _protocol(toy, tmp_path, "full", mesh)
  with pytest.raises(ev.Stopped):
    _protocol(toy, tmp_path, "cut", mesh, stop_after_batches=3)
  part = dict(np.load(tmp_path / "cut.npz"))
  assert (part["clean"] >= 0).all() and not part["seen"][-1].any()  # stopped mid-way
  resumed = _protocol(toy, tmp_path, "cut", mesh)
  np.testing.assert_array_equal(resumed["broken_by"], full["broken_by"])
  np.testing.assert_array_equal(resumed["clean"], full["clean"])
  robust = ((full["clean"] == 1) & (full["broken_by"] < 0)).mean()
  assert 0.0 < robust < (full["clean"] == 1).mean()  # some points broken, some not


@pytest.mark.xdist_group("aa_toy")
def test_result_on_8_devices_equals_result_on_1(toy, tmp_path):
  assert len(jax.devices()) == 8
  half = tuple(a[:128] for a in toy[1:])  # 2 batches: one device runs its attacks at 1/8 speed
  r8 = _protocol((toy[0], *half), tmp_path, "d8", parallel.make_mesh(8))
  r1 = _protocol((toy[0], *half), tmp_path, "d1", parallel.make_mesh(1))
  np.testing.assert_array_equal(r8["broken_by"], r1["broken_by"])
  # Batches are padded to a multiple of the device count only, so 8 devices ran some attack on
  # more rows than 1 device did: padding must change no real point's result.
  assert parallel.pad_multiple(parallel.make_mesh(8)) == 8
  assert parallel.pad_multiple(parallel.make_mesh(1)) == 1
  clean, bb = r8["clean"] == 1, r8["broken_by"]
  alive = [int((clean & ((bb < 0) | (bb >= k))).sum()) for k in range(1, 5)]
  assert any(a % 8 for a in alive), alive


def test_bad_attack_names_and_options_fail_before_compute():
  with pytest.raises(ValueError, match="valid"):
    aa.resolve("apgd-ce,pgd-1000")
  with pytest.raises(ValueError, match="Unknown AutoAttack option"):
    aa.options(n_iters=5)
  assert aa.resolve("standard") == ("apgd-ce", "apgd-t", "fab-t", "square")


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "fab-t", "square"])
def test_host_driven_loops_match_the_single_jit_program(toy, name):
  p, x, y = toy
  x, y = x[:64], y[:64]
  active = jnp.arange(64) % 5 != 0
  key = jax.random.key(3)
  xa1, r1 = jax.jit(
    lambda x, y: aa.attack_batch(
      name, lambda v: _mlp(p, v), x, y, active, eps=0.08, norm="linf", rng=key, **TINY
    )
  )(x, y)
  runner = aa.HostRunner(lambda v, z: _mlp(v, z), eps=0.08, norm="linf", chunk=4, **TINY)
  xa2, r2 = runner.run(name, p, x, y, active, key)
  np.testing.assert_array_equal(np.asarray(r1), np.asarray(r2))
  np.testing.assert_allclose(np.asarray(xa1), np.asarray(xa2), atol=1e-5)


def test_one_host_runner_serves_every_radius_with_the_same_results(toy):
  """The honesty checks sweep five radii through the evaluation's own runner: a radius given
  per call must give what a runner built for it gives, and must not compile new programs."""
  p, x, y = toy
  x, y, active = x[:64], y[:64], jnp.ones(64, bool)
  key = jax.random.key(5)
  shared = aa.HostRunner(lambda v, z: _mlp(v, z), eps=0.08, norm="linf", chunk=5, **TINY)
  for name in ("apgd-ce", "square"):
    shared.run(name, p, x, y, active, key)
  compiled = len(shared._jits)
  for eps in (0.02, 0.16):
    own = aa.HostRunner(lambda v, z: _mlp(v, z), eps=eps, norm="linf", chunk=5, **TINY)
    for name in ("apgd-ce", "square"):
      xa1, r1 = own.run(name, p, x, y, active, key)
      xa2, r2 = shared.run(name, p, x, y, active, key, eps=eps)
      np.testing.assert_array_equal(np.asarray(r1), np.asarray(r2))
      np.testing.assert_allclose(np.asarray(xa1), np.asarray(xa2), atol=1e-6)
      assert _dist(xa2, x, "linf").max() <= eps + 1e-5
  assert len(shared._jits) == compiled
  shared.run("apgd-ce", p, x, y, active, key, n_iter=20)  # a new schedule: its own programs
  assert len(shared._jits) > compiled
