"""``eval.run_eval``: the attacks of an evaluation run on the correctly classified points only,
and the figures are those of attacking every point."""

import jax
import jax.numpy as jnp
import numpy as np

from robust_distill import parallel
from robust_distill.eval import metrics


def _toy(n, seed=0):
  rng = np.random.default_rng(seed)
  data = {
    "image": rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8),
    "label": rng.integers(0, 3, n).astype(np.int32),
    "id": np.arange(n, dtype=np.int64),
  }
  w = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
  logits = lambda x: x.reshape(len(x), -1) @ w
  # A deterministic stand-in for an attack: a point "survives" if its mean pixel is high.
  survives = lambda x: x.reshape(len(x), -1).mean(1) > 0.5

  def correct(params, stats, batch):
    x = batch["image"].astype(jnp.float32) / 255.0
    return jnp.argmax(logits(x), -1) == batch["label"]

  @jax.jit
  def counts(params, stats, batch, key):
    x, v = batch["image"].astype(jnp.float32) / 255.0, batch["valid"]
    ok = correct(params, stats, batch)
    return {"n": jnp.sum(v), "clean": jnp.sum(ok & v), "pgd": jnp.sum(ok & v & survives(x))}

  return data, correct, counts


def test_attacks_run_on_correct_points_only_with_the_figures_of_attacking_all():
  mesh = parallel.make_mesh()
  for n, limit, batch_size in ((203, 0, 64), (203, 50, 32), (40, 0, 64)):
    data, correct, counts = _toy(n, seed=n + limit)
    seen = []

    def recording(params, stats, batch, key, seen=seen, correct=correct, counts=counts):
      b = jax.device_get(batch)
      seen.append((b["valid"], np.asarray(jax.device_get(correct(None, None, b)))))
      return counts(params, stats, batch, key)

    fn = metrics.EvalFn(recording, correct, attacks=("pgd",))
    two = metrics.run_eval(fn, None, None, data, mesh, batch_size=batch_size, limit=limit)
    one = metrics.run_eval(counts, None, None, data, mesh, batch_size=batch_size, limit=limit)
    assert two == one and two["n"] == (limit or n)
    attacked = sum(int(v.sum()) for v, _ in seen)
    assert attacked == round(one["clean_acc"] * one["n"]) < one["n"]
    assert all(ok[v].all() for v, ok in seen)  # only correctly classified points are attacked
    sizes = {len(v) for v, _ in seen}
    assert len(sizes) == 1 and sizes.pop() % 8 == 0  # one padded shape: one compiled program


def test_no_correct_point_means_no_attack_and_zero_robust_accuracy():
  mesh = parallel.make_mesh()
  data, correct, counts = _toy(24)
  data["label"][:] = 7  # a class the toy model has no logit for
  calls = []
  fn = metrics.EvalFn(lambda *a: calls.append(1) or counts(*a), correct, attacks=("pgd",))
  res = metrics.run_eval(fn, None, None, data, mesh, batch_size=16)
  assert res == {"clean_acc": 0.0, "pgd_acc": 0.0, "n": 24} and not calls
