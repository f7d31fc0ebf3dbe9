"""The threat model shared by every attack: L-inf or L2 balls intersected with the [0, 1] box,
their norms, projections and random starts."""

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")
INITS = ("uniform", "normal", "none")


def check_names(*, norm: str = "linf", init: str = "uniform") -> None:
  """Raises ValueError naming the valid choices for an unknown norm or init."""
  if norm not in NORMS:
    raise ValueError(f"Unknown attack norm {norm!r}; valid: {list(NORMS)}")
  if init not in INITS:
    raise ValueError(f"Unknown attack init {init!r}; valid: {list(INITS)}")


def per_example_norm(v):
  """L2 norm of each example of a batch, shaped to broadcast against it."""
  return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def flat_norm(v, norm):
  """Per-example L-inf or L2 norm of a batch, shape ``[B]``."""
  v = v.reshape(v.shape[0], -1)
  if norm == "linf":
    return jnp.max(jnp.abs(v), axis=1)
  return jnp.sqrt(jnp.sum(v * v, axis=1))


def project(x_adv, x, *, eps, norm):
  """Projects ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x`` and into [0, 1]
  (PGD's form: clip the perturbation, then the image)."""
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -eps, eps)
  else:
    delta = delta * jnp.minimum(1.0, eps / (per_example_norm(delta) + 1e-12))
  return jnp.clip(x + delta, 0.0, 1.0)


def project_box(v, x, *, eps, norm):
  """The same projection in the original AutoAttack code's arithmetic (clip to ``[x - eps,
  x + eps]``; L2: rescale to ``min(eps, ||d||)``); kept apart so that APGD's iterates match the
  original to the last bit."""
  if norm == "linf":
    return jnp.clip(jnp.clip(v, x - eps, x + eps), 0.0, 1.0)
  d = v - x
  n = per_example_norm(d)
  return jnp.clip(x + d / (n + 1e-12) * jnp.minimum(eps, n), 0.0, 1.0)


def random_init(rng, x, *, eps, norm, init):
  """PGD's start: uniform in the ball, ``x + 0.001 N(0, I)`` (TRADES), or ``x`` itself."""
  if init == "none":
    return x
  if init == "normal":
    return jnp.clip(x + 0.001 * jax.random.normal(rng, x.shape, x.dtype), 0.0, 1.0)
  if norm == "linf":
    return jnp.clip(x + jax.random.uniform(rng, x.shape, x.dtype, -eps, eps), 0.0, 1.0)
  k1, k2 = jax.random.split(rng)
  d = jax.random.normal(k1, x.shape, x.dtype)
  d = d / (per_example_norm(d) + 1e-12)
  r = jax.random.uniform(k2, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
  return project(x + eps * r * d, x, eps=eps, norm=norm)


def surface_init(rng, x, *, eps: float, norm: str):
  """APGD's start: a random point on the surface of the ball, clipped to [0, 1]."""
  if norm == "linf":
    t = 2.0 * jax.random.uniform(rng, x.shape, x.dtype) - 1.0
    m = jnp.max(jnp.abs(t), axis=tuple(range(1, x.ndim)), keepdims=True)
    return jnp.clip(x + eps * t / (m + 1e-12), 0.0, 1.0)
  t = jax.random.normal(rng, x.shape, x.dtype)
  return jnp.clip(x + eps * t / (per_example_norm(t) + 1e-12), 0.0, 1.0)
