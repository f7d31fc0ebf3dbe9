"""Projected gradient descent (ascent) as a pure function of a logits function.

``pgd(logits_fn, x, target, ...)`` maximises ``objective(logits_fn(x_adv), target)`` inside the
L-inf or L2 ball of radius ``eps`` around ``x`` and inside ``[0, 1]``. ``logits_fn`` is any
function of a batch of images: a model in eval mode closed over its parameters, a model with a
fixed temperature, or a pair of models (for the ``kl_models`` objective it returns a tuple
``(student_logits, teacher_logits)``). Whether BatchNorm uses running averages during the attack
is decided by whoever builds ``logits_fn`` (``robust_distill.train.step`` makes it explicit, and
defaults to running averages).

The loop is ``lax.fori_loop`` with an ``unroll`` setting: XLA:CPU runs a rolled ``while`` body
3-4x slower than the same ops unrolled, while on GPU/TPU a rolled loop is fine and compiles
faster; ``unroll=None`` picks per backend (shared/docs/cpu-performance.md).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from robust_distill.losses import core

NORMS = ("linf", "l2")
INITS = ("uniform", "normal", "none")


def _obj_ce(logits, labels):
  return core.cross_entropy(logits, labels)


def _obj_ce_targeted(logits, target_labels):
  return -core.cross_entropy(logits, target_labels)


def _obj_kl(logits, target_probs):
  return core.kl_divergence(target_probs, logits)


def _obj_kl_models(logits_pair, _):
  moving, reference = logits_pair
  return core.kl_logits(reference, moving)


def _obj_cw(logits, labels):
  return core.cw_margin(logits, labels)


# Per-example objectives the attack maximises.
OBJECTIVES: dict[str, Callable[[Any, Any], jax.Array]] = {
    "ce": _obj_ce,                  # CE(f(x'), y): PGD-AT, MART, ARD, IAD.
    "ce_targeted": _obj_ce_targeted,  # -CE(f(x'), t): move towards class t (AGKD-BML).
    "kl": _obj_kl,                  # KL(P || f(x')), P fixed: TRADES (P = p(f(x))), RSLAD.
    "kl_models": _obj_kl_models,    # KL(p(g(x')) || p(f(x'))), both on x': AdaAD, DGAD.
    "cw": _obj_cw,                  # max_{j!=y} z_j - z_y: CW-inf.
}


def check_names(*, objective: str = "ce", norm: str = "linf", init: str = "uniform") -> None:
  """Raises ValueError naming the valid choices for an unknown objective, norm or init."""
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown attack objective {objective!r}; valid: {sorted(OBJECTIVES)}")
  if norm not in NORMS:
    raise ValueError(f"Unknown attack norm {norm!r}; valid: {list(NORMS)}")
  if init not in INITS:
    raise ValueError(f"Unknown attack init {init!r}; valid: {list(INITS)}")


def default_unroll(steps: int) -> int:
  """Unrolled on CPU, rolled (1) on accelerators."""
  return max(int(steps), 1) if jax.default_backend() == "cpu" else 1


def per_example_norm(v):
  return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def project(x_adv, x, *, eps, norm):
  """Projects ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x`` and into [0, 1]."""
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -eps, eps)
  else:
    delta = delta * jnp.minimum(1.0, eps / (per_example_norm(delta) + 1e-12))
  return jnp.clip(x + delta, 0.0, 1.0)


def random_init(rng, x, *, eps, norm, init):
  """Starting point: uniform in the ball, ``x + 0.001 N(0, I)`` (TRADES), or ``x`` itself."""
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


def pgd(logits_fn: Callable[[jax.Array], Any], x: jax.Array, target: Any = None, *,
        eps: float, step_size: float, steps: int, objective: str = "ce", norm: str = "linf",
        init: str = "uniform", rng: jax.Array | None = None, unroll: int | None = None
        ) -> jax.Array:
  """Runs ``steps`` iterations of projected gradient ascent on ``objective``.

  Args:
    logits_fn: images ``[B, ...]`` in [0, 1] -> logits (or a pair of logits for
      ``kl_models``).
    x: clean images in [0, 1].
    target: labels (``ce``, ``cw``), target labels (``ce_targeted``), a probability
      distribution ``[B, C]`` (``kl``), or ``None`` (``kl_models``).
    eps: radius of the ball.
    step_size: L-inf: step along ``sign(grad)``; L2: step along ``grad / ||grad||_2``.
    steps: number of iterations (0 returns the random start).
    objective: a key of ``OBJECTIVES``.
    norm: ``linf`` or ``l2``.
    init: ``uniform`` (in the ball), ``normal`` (``0.001 N(0, I)``, TRADES) or ``none``.
    rng: PRNG key; required unless ``init == 'none'``.
    unroll: ``fori_loop`` unroll factor; ``None`` = all steps on CPU, 1 on accelerators.

  Returns:
    Adversarial images, same shape as ``x``, with gradients stopped.
  """
  check_names(objective=objective, norm=norm, init=init)
  if init != "none" and rng is None:
    raise ValueError(f"pgd with init={init!r} needs an rng key")
  obj = OBJECTIVES[objective]
  x = jax.lax.stop_gradient(x)
  target = jax.lax.stop_gradient(target) if target is not None else None

  def total(xa):
    return jnp.sum(obj(logits_fn(xa), target))

  grad_fn = jax.grad(total)

  def body(_, xa):
    g = grad_fn(xa)
    if norm == "linf":
      xa = xa + step_size * jnp.sign(g)
    else:
      xa = xa + step_size * g / (per_example_norm(g) + 1e-12)
    return project(xa, x, eps=eps, norm=norm)

  x0 = random_init(rng, x, eps=eps, norm=norm, init=init)
  if steps <= 0:
    return jax.lax.stop_gradient(x0)
  unroll = default_unroll(steps) if unroll is None or unroll < 1 else int(unroll)
  x_adv = jax.lax.fori_loop(0, steps, body, x0, unroll=unroll)
  return jax.lax.stop_gradient(x_adv)
