"""AutoAttack's protocol (Croce & Hein, ICML 2020) over the JAX attacks of this package.

``VERSIONS`` names the attack lists: ``standard`` = APGD-CE, APGD-T (9 targets), FAB-T
(9 targets), Square (5000 queries), each with 100 iterations and one restart; ``rand`` =
APGD-CE and APGD-DLR with the gradient averaged over 20 draws (for randomized defences; the
logits function then takes ``(x, key)``). A custom list of names from ``ATTACKS`` is also
accepted. Each attack runs only on the points that are still robust, and a point is robust
only if it survives every attack (the per-point worst case).

``attack_batch`` runs one attack on a fixed-shape batch with an ``active`` mask (the shape the
sharded evaluator in ``robust_distill.eval`` compiles once); ``run`` is the in-memory,
single-batch version of the whole protocol, for use from other JAX code.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from robust_distill.attacks import apgd as apgd_lib
from robust_distill.attacks import fab as fab_lib
from robust_distill.attacks import square as square_lib
from robust_distill.attacks.aa_options import (
  ATTACKS,
  DEFAULTS,
  DRIVERS,
  VERSIONS,
  options,
  parse_opts,
  resolve,
)
from robust_distill.attacks.host_runner import HostRunner

__all__ = [
  "ATTACKS",
  "DEFAULTS",
  "DRIVERS",
  "VERSIONS",
  "HostRunner",
  "attack_batch",
  "options",
  "parse_opts",
  "resolve",
  "run",
]


def attack_batch(
  name: str,
  logits_fn: Callable,
  x: jax.Array,
  y: jax.Array,
  active: jax.Array,
  *,
  eps: float,
  norm: str,
  rng: jax.Array,
  **opts,
) -> tuple[jax.Array, jax.Array]:
  """Runs attack ``name`` on the ``active`` examples of a batch.

  Returns ``(x_adv, robust)``: ``robust`` is True where an active example is still classified
  correctly after the attack (False for inactive examples), ``x_adv`` the point that broke it
  (``x`` where nothing did).
  """
  o = options(**opts)
  unroll = o["unroll"] if o["unroll"] > 0 else None
  if name in ("apgd-ce", "apgd-dlr"):
    xa, r = apgd_lib.apgd(
      logits_fn,
      x,
      y,
      eps=eps,
      norm=norm,
      loss="ce" if name == "apgd-ce" else "dlr",
      n_iter=o["n_iter"],
      rho=o["rho"],
      rng=rng,
      eot_iter=o["eot_iter"],
      unroll=unroll,
    )
    return xa, r & active
  if name == "apgd-t":
    return apgd_lib.apgd_targeted(
      logits_fn,
      x,
      y,
      eps=eps,
      norm=norm,
      n_target_classes=o["n_target_classes"],
      n_iter=o["n_iter"],
      rho=o["rho"],
      rng=rng,
      active=active,
      unroll=unroll,
    )
  if name == "fab-t":
    return fab_lib.fab_targeted(
      logits_fn,
      x,
      y,
      eps=eps,
      norm=norm,
      n_target_classes=o["n_target_classes"],
      n_iter=o["fab_iter"],
      active=active,
      unroll=unroll,
    )
  if name == "square":
    return square_lib.square(
      logits_fn,
      x,
      y,
      eps=eps,
      norm=norm,
      n_queries=o["n_queries"],
      p_init=o["p_init"],
      rng=rng,
      active=active,
      chunk=o["chunk"],
    )
  raise ValueError(f"Unknown attack {name!r}; valid: {list(ATTACKS)}")


def run(
  logits_fn: Callable,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float,
  norm: str = "linf",
  attacks: str | Sequence[str] = "standard",
  rng: jax.Array,
  **opts,
) -> dict:
  """The whole protocol on one in-memory batch (jit it, or call it eagerly on small batches).

  Returns a dict with ``x_adv``, ``robust`` (bool ``[B]``), ``clean`` (bool ``[B]``) and
  ``broken_by`` (int ``[B]``: -1 robust, 0 misclassified clean, ``k`` the k-th attack, 1-based).
  """
  names = resolve(attacks)
  version = attacks if isinstance(attacks, str) and attacks in VERSIONS else "standard"
  o = options(version, **opts)
  keyed = o["eot_iter"] > 1  # a randomized model: logits_fn(x, key)
  clean_fn = (lambda v: logits_fn(v, jax.random.key(0))) if keyed else logits_fn
  clean = jnp.argmax(clean_fn(x), -1) == y
  robust, x_adv = clean, x
  broken_by = jnp.where(clean, -1, 0)
  bshape = (x.shape[0],) + (1,) * (x.ndim - 1)
  for k, name in enumerate(names):
    fn = logits_fn if name in ("apgd-ce", "apgd-dlr") else clean_fn
    xa, r = attack_batch(
      name, fn, x, y, robust, eps=eps, norm=norm, rng=jax.random.fold_in(rng, k), **o
    )
    newly = robust & ~r
    x_adv = jnp.where(newly.reshape(bshape), xa, x_adv)
    broken_by = jnp.where(newly, k + 1, broken_by)
    robust = robust & r
  return dict(x_adv=x_adv, robust=robust, clean=clean, broken_by=broken_by)
