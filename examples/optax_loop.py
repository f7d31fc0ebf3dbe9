"""robust_distill's losses and attacks inside a plain optax loop of your own.

Nothing here comes from robust_distill's training loop, configs or checkpoints: the model is a
two-layer MLP written as a pure function of a parameter dict, the optimiser is optax.adam, and
the step is one ``jax.jit``. It trains with LTD's whole loss, ``robust_distill.losses.ltd``
(TRADES with the clean CE replaced by a low-temperature soft-label term), from a "teacher" that
is simply the true labels sharpened, then reports clean, PGD-20 and AutoAttack (APGD-CE +
APGD-T) accuracy.

    python examples/optax_loop.py                 # synthetic data, about 30 s on 2 CPU cores
    python examples/optax_loop.py --steps=400 --data=fashion_mnist

The last line printed is a JSON summary (the test reads it).
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robust_distill import attacks, losses
from robust_distill.data import pipeline


def init_mlp(key, d_in: int, hidden: int, classes: int) -> dict:
  k1, k2 = jax.random.split(key)
  return {
    "w1": jax.random.normal(k1, (d_in, hidden)) * (2.0 / d_in) ** 0.5,
    "b1": jnp.zeros(hidden),
    "w2": jax.random.normal(k2, (hidden, classes)) * (1.0 / hidden) ** 0.5,
    "b2": jnp.zeros(classes),
  }


def mlp(params: dict, x: jax.Array) -> jax.Array:
  h = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def synthetic(n: int, seed: int, classes: int = 10):
  """Class prototypes plus noise, 28x28x1 in [0, 1] (learnable, not trivially robust)."""
  rng = np.random.default_rng(seed)
  protos = np.random.default_rng(123).uniform(0, 1, (classes, 28, 28, 1))
  y = rng.integers(0, classes, n)
  x = np.clip(0.4 * protos[y] + 0.6 * rng.uniform(0, 1, (n, 28, 28, 1)), 0, 1)
  return x.astype(np.float32), y.astype(np.int32)


def load(data: str, n_train: int, n_test: int):
  if data == "synthetic":
    return synthetic(n_train, 0), synthetic(n_test, 1)
  tr, te = (pipeline.load_split(data, s) for s in ("train", "test"))
  f = lambda d, n: (d["image"][:n].astype(np.float32) / 255.0, d["label"][:n].astype(np.int32))
  return f(tr, n_train), f(te, n_test)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default="synthetic", help="synthetic or fashion_mnist")
  p.add_argument("--steps", type=int, default=150)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--eps", type=float, default=0.1)
  p.add_argument("--beta", type=float, default=3.0, help="TRADES weight")
  p.add_argument("--tau", type=float, default=0.5, help="soft-label (teacher) temperature")
  p.add_argument("--eval_n", type=int, default=256)
  a = p.parse_args(argv)

  (xtr, ytr), (xte, yte) = load(a.data, 4096, a.eval_n)
  params = init_mlp(jax.random.key(0), xtr[0].size, 256, 10)
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  def loss_fn(params, x, y, key):
    f = lambda v: mlp(params, v)
    clean = f(x)
    # TRADES attack: maximise KL(p(f(x)) || p(f(x'))) from x + 0.001 N(0, I).
    x_adv, _ = attacks.pgd(
      f,
      x,
      jax.nn.softmax(jax.lax.stop_gradient(clean)),
      eps=a.eps,
      step_size=a.eps / 4,
      steps=5,
      objective="kl",
      init="normal",
      rng=key,
    )
    teacher = 5.0 * jax.nn.one_hot(y, 10)  # stand-in teacher logits, sharpened by tau < 1
    per_example = losses.ltd(clean, f(x_adv), teacher, beta=a.beta, teacher_temperature=a.tau)
    return jnp.mean(per_example)

  @jax.jit
  def step(params, opt_state, x, y, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def evaluate(params, x, y, key):
    f = lambda v: mlp(params, v)
    clean = jnp.argmax(f(x), -1) == y
    _, robust = attacks.pgd(
      f, x, y, eps=a.eps, step_size=a.eps / 8, steps=20, objective="ce", rng=key
    )
    pgd_ok = clean & robust
    aa = attacks.autoattack.run(
      f, x, y, eps=a.eps, attacks="apgd-ce,apgd-t", rng=key, n_iter=20, n_target_classes=3
    )
    return clean.mean(), pgd_ok.mean(), aa["robust"].mean()

  before = [float(v) for v in evaluate(params, xte, yte, jax.random.key(1))]
  rng = np.random.default_rng(0)
  for i in range(a.steps):
    idx = rng.integers(0, len(ytr), a.batch)
    params, opt_state, loss = step(params, opt_state, xtr[idx], ytr[idx], jax.random.key(i))
    if (i + 1) % 50 == 0 or i == 0:
      print(f"step {i + 1}/{a.steps} loss {float(loss):.4f}", flush=True)
  after = [float(v) for v in evaluate(params, xte, yte, jax.random.key(1))]
  names = ("clean", "pgd20", "autoattack")
  for n, b, c in zip(names, before, after):
    print(f"{n:>10}: {100 * b:6.2f}% -> {100 * c:6.2f}%")
  print(
    json.dumps(
      {
        "before": dict(zip(names, before)),
        "after": dict(zip(names, after)),
        "final_loss": float(loss),
      }
    )
  )


if __name__ == "__main__":
  main()
