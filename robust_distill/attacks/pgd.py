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
faster; ``unroll=None`` picks per backend.
"""

from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp

from robust_distill.attacks import objectives, threat
from robust_distill.attacks.objectives import OBJECTIVES
from robust_distill.attacks.threat import INITS, NORMS, per_example_norm, project, random_init

__all__ = [
  "INITS",
  "NORMS",
  "OBJECTIVES",
  "check_names",
  "default_unroll",
  "per_example_norm",
  "pgd",
  "project",
  "random_init",
]


def check_names(*, objective: str = "ce", norm: str = "linf", init: str = "uniform") -> None:
  """Raises ValueError naming the valid choices for an unknown objective, norm or init."""
  objectives.check(objective)
  threat.check_names(norm=norm, init=init)


def default_unroll(steps: int) -> int:
  """Unrolled on CPU, rolled (1) on accelerators."""
  return max(int(steps), 1) if jax.default_backend() == "cpu" else 1


def pgd(
  logits_fn: Callable[[jax.Array], Any],
  x: jax.Array,
  target: Any = None,
  *,
  eps: float,
  step_size: float,
  steps: int,
  objective: str = "ce",
  norm: str = "linf",
  init: str = "uniform",
  rng: jax.Array | None = None,
  unroll: int | None = None,
  labels: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array | None]:
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
    labels: true labels for ``robust`` (default: ``target`` for the ``ce`` and ``cw``
      objectives, whose target is the labels).

  Returns:
    ``(x_adv, robust)``, as every attack of this package: the adversarial images (gradients
    stopped) and whether each is still classified as its label (``None`` when no labels are
    known: KL and targeted objectives without ``labels``). Under ``jax.jit`` an unused
    ``robust`` costs nothing.
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
    x_adv = jax.lax.stop_gradient(x0)
  else:
    unroll = default_unroll(steps) if unroll is None or unroll < 1 else int(unroll)
    x_adv = jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, x0, unroll=unroll))
  if labels is None and objective in ("ce", "cw"):
    labels = target
  robust = None if labels is None else jnp.argmax(logits_fn(x_adv), -1) == labels
  return x_adv, robust
