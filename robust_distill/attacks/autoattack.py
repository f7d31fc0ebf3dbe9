"""AutoAttack's protocol (Croce & Hein, ICML 2020) over the JAX attacks of this package.

``VERSIONS`` names the attack lists: ``standard`` = APGD-CE, APGD-T (9 targets), FAB-T
(9 targets), Square (5000 queries), each with 100 iterations and one restart; ``rand`` =
APGD-CE and APGD-DLR with the gradient averaged over 20 draws (for randomized defences; the
logits function then takes ``(x, key)``). A custom list of names from ``ATTACKS`` is also
accepted. Each attack runs only on the points that are still robust, and a point is robust
only if it survives every attack (the per-point worst case).

``attack_batch`` runs one attack on a fixed-shape batch with an ``active`` mask (the shape the
sharded evaluator in ``robust_distill.evaluate`` compiles once); ``run`` is the in-memory,
single-batch version of the whole protocol, for use from other JAX code.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from robust_distill.attacks import apgd as apgd_lib
from robust_distill.attacks import fab as fab_lib
from robust_distill.attacks import square as square_lib

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
VERSIONS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
# AutoAttack's defaults; ``attack_batch(..., **overrides)`` changes them (tests use fewer steps).
# ``unroll=1``: the APGD and FAB iteration loops stay rolled. Unlike the 10-step PGD of training
# (shared/docs/cpu-performance.md), their bodies are large enough that XLA:CPU runs the rolled
# loop as fast as the unrolled one (APGD-CE, small CNN, batch 256, 8 host devices: 9.5 s vs
# 9.1 s per 100 iterations), while unrolling 100 iterations costs ~2 minutes of compilation.
# ``chunk``: straight-line iterations per compiled call of ``HostRunner`` and Square queries per
# ``while_loop`` turn in ``attack_batch`` (0: 10 on CPU, 1 on accelerators).
# ``driver``: how ``robust_distill.evaluate`` runs the loops: 'host' (``HostRunner``), 'device'
# (``attack_batch`` in one ``jax.jit``) or 'auto' (host on CPU, device on GPU/TPU).
DEFAULTS = dict(n_iter=100, n_target_classes=9, n_queries=5000, p_init=0.8, rho=0.75,
                eot_iter=1, fab_iter=100, unroll=1, chunk=0, driver="auto")
DRIVERS = ("auto", "host", "device")


def resolve(attacks: str | Sequence[str]) -> tuple[str, ...]:
  """A version name ('standard', 'rand') or comma-separated/listed attack names -> names."""
  if isinstance(attacks, str):
    if attacks in VERSIONS:
      return VERSIONS[attacks]
    attacks = [a.strip() for a in attacks.split(",") if a.strip()]
  attacks = tuple(attacks)
  bad = [a for a in attacks if a not in ATTACKS]
  if bad or not attacks:
    raise ValueError(f"Unknown attack(s) {bad or attacks!r}; valid: versions "
                     f"{sorted(VERSIONS)} or a comma-separated list of {list(ATTACKS)}")
  return attacks


def options(version: str = "standard", **overrides) -> dict:
  """The attack settings of a version, with overrides (unknown keys are an error)."""
  bad = set(overrides) - set(DEFAULTS)
  if bad:
    raise ValueError(f"Unknown AutoAttack option(s) {sorted(bad)}; valid: {sorted(DEFAULTS)}")
  opts = dict(DEFAULTS)
  if version == "rand":
    opts["eot_iter"] = 20
  opts.update(overrides)
  if opts["driver"] not in DRIVERS:
    raise ValueError(f"Unknown driver {opts['driver']!r}; valid: {list(DRIVERS)}")
  return opts


def parse_opts(text: str) -> dict:
  """``'n_iter=10,driver=host'`` -> ``{'n_iter': 10, 'driver': 'host'}`` (configs hold strings)."""
  out = {}
  for kv in [t.strip() for t in text.split(",") if t.strip()]:
    if "=" not in kv:
      raise ValueError(f"AutoAttack option {kv!r} is not KEY=VALUE")
    k, v = (t.strip() for t in kv.split("=", 1))
    if k not in DEFAULTS:
      raise ValueError(f"Unknown AutoAttack option {k!r}; valid: {sorted(DEFAULTS)}")
    out[k] = type(DEFAULTS[k])(v)
  return out


def attack_batch(name: str, logits_fn: Callable, x: jax.Array, y: jax.Array, active: jax.Array,
                 *, eps: float, norm: str, rng: jax.Array, **opts) -> tuple[jax.Array, jax.Array]:
  """Runs attack ``name`` on the ``active`` examples of a batch.

  Returns ``(x_adv, robust)``: ``robust`` is True where an active example is still classified
  correctly after the attack (False for inactive examples), ``x_adv`` the point that broke it
  (``x`` where nothing did).
  """
  o = options(**opts)
  unroll = o["unroll"] if o["unroll"] > 0 else None
  if name in ("apgd-ce", "apgd-dlr"):
    xa, r = apgd_lib.apgd(logits_fn, x, y, eps=eps, norm=norm,
                          loss="ce" if name == "apgd-ce" else "dlr", n_iter=o["n_iter"],
                          rho=o["rho"], rng=rng, eot_iter=o["eot_iter"], unroll=unroll)
    return xa, r & active
  if name == "apgd-t":
    return apgd_lib.apgd_targeted(logits_fn, x, y, eps=eps, norm=norm,
                                  n_target_classes=o["n_target_classes"], n_iter=o["n_iter"],
                                  rho=o["rho"], rng=rng, active=active, unroll=unroll)
  if name == "fab-t":
    return fab_lib.fab_targeted(logits_fn, x, y, eps=eps, norm=norm,
                                n_target_classes=o["n_target_classes"], n_iter=o["fab_iter"],
                                active=active, unroll=unroll)
  if name == "square":
    xa, r, _ = square_lib.square(logits_fn, x, y, eps=eps, norm=norm, n_queries=o["n_queries"],
                                 p_init=o["p_init"], rng=rng, active=active,
                                 chunk=o["chunk"])
    return xa, r
  raise ValueError(f"Unknown attack {name!r}; valid: {list(ATTACKS)}")


def run(logits_fn: Callable, x: jax.Array, y: jax.Array, *, eps: float, norm: str = "linf",
        attacks: str | Sequence[str] = "standard", rng: jax.Array, **opts) -> dict:
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
    xa, r = attack_batch(name, fn, x, y, robust, eps=eps, norm=norm,
                         rng=jax.random.fold_in(rng, k), **o)
    newly = robust & ~r
    x_adv = jnp.where(newly.reshape(bshape), xa, x_adv)
    broken_by = jnp.where(newly, k + 1, broken_by)
    robust = robust & r
  return dict(x_adv=x_adv, robust=robust, clean=clean, broken_by=broken_by)


class HostRunner:
  """Runs the attacks of ``attack_batch`` with their iteration loops driven from the host, in
  compiled chunks of ``chunk`` straight-line iterations.

  Same attacks, same random keys and the same per-point results as ``attack_batch``; the
  difference is only in how the loops are executed. XLA:CPU runs the body of any ``while`` loop
  several times slower than straight-line code (PGD-20 on the small CNN, batch 256, 8 host
  devices: 11.7 s rolled, 11.5 s with unroll 5, 2.1 s fully unrolled), and fully unrolling 100
  APGD or FAB iterations, nested in a loop over 9 targets, is not compilable in reasonable time.
  On GPU/TPU ``attack_batch`` inside one ``jax.jit`` is the better choice.

  Args:
    model_fn: ``model_fn(variables, x) -> logits`` (pure; ``variables`` is any pytree).
    eps, norm: the threat model. opts: as ``options`` (``chunk``: iterations per compiled call,
      default 10).
  """

  def __init__(self, model_fn, *, eps: float, norm: str, **opts):
    self.o = options(**opts)
    self.model_fn, self.eps, self.norm = model_fn, eps, norm
    self.chunk = self.o["chunk"] if self.o["chunk"] > 0 else 10
    if self.o["eot_iter"] > 1:
      raise ValueError("HostRunner does not support eot_iter > 1; use attack_batch")
    self._jits = {}

  def _jit(self, key, fn):
    if key not in self._jits:
      self._jits[key] = jax.jit(fn)
    return self._jits[key]

  def _loop(self, tag, algo, step_args, v, x, y, st, n, pending=None):
    """Runs ``algo.step`` for iterations 0..n-1 in chunks; stops early once ``pending(st)`` is
    False (checked between chunks)."""
    sizes = [self.chunk] * (n // self.chunk) + ([n % self.chunk] if n % self.chunk else [])
    i0 = 0
    for size in sizes:
      def chunk_fn(v, x, y, st, i0, size=size):
        lf = lambda z: self.model_fn(v, z)
        for k in range(size):
          st = algo.step(lf, x, y, st, i0 + k)
        return st
      st = self._jit((tag, "chunk", size), chunk_fn)(v, x, y, st, jnp.int32(i0))
      i0 += size
      if pending is not None and not bool(pending(st)):
        break
    return st

  def _targets(self, v, x, y):
    def fn(v, x, y):
      z = self.model_fn(v, x)
      return apgd_lib.target_classes(z, self.o["n_target_classes"]), jnp.argmax(z, -1) == y
    return self._jit(("targets",), fn)(v, x, y)

  def run(self, name: str, variables, x, y, active, rng) -> tuple[jax.Array, jax.Array]:
    """Attack ``name`` on the ``active`` examples; returns ``(x_adv, robust)`` like
    ``attack_batch``."""
    o, v = self.o, variables
    bshape = (x.shape[0],) + (1,) * (x.ndim - 1)
    if name in ("apgd-ce", "apgd-dlr", "apgd-t"):
      loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr_targeted"}[name]
      algo = apgd_lib.APGD(eps=self.eps, norm=self.norm, loss=loss, n_iter=o["n_iter"],
                           rho=o["rho"])
      init = self._jit((loss, "init"), lambda v, x, y, k, yt: algo.init(
          lambda z: self.model_fn(v, z), x, y, k, yt))
      res = self._jit(("apgd", "result"), apgd_lib.APGD.result)

      def one(key, y_t):
        st = init(v, x, y, key, y_t)
        st = self._loop(loss, algo, None, v, x, y, st, o["n_iter"])
        return res(x, st)

      if name != "apgd-t":
        xa, r = one(rng, y)
        return xa, r & active
      targets, robust = self._targets(v, x, y)
      robust = robust & active
      x_adv = x
      upd = self._jit(("merge",), lambda robust, r, xa, x_adv: (
          robust & r, jnp.where((robust & ~r).reshape(bshape), xa, x_adv)))
      for t in range(o["n_target_classes"]):
        if not bool(jnp.any(robust)):
          break
        xa, r = one(jax.random.fold_in(rng, t), targets[t])
        robust, x_adv = upd(robust, r, xa, x_adv)
      return x_adv, robust
    if name == "fab-t":
      algo = fab_lib.FAB(norm=self.norm, n_iter=o["fab_iter"])
      targets, robust = self._targets(v, x, y)
      robust = robust & active
      x_adv = x

      def fin(v, x, y, st, robust, x_adv):
        adv, _ = fab_lib.FAB.result(st)
        still = ~fab_lib.fab_broken(lambda z: self.model_fn(v, z), x, y, adv, eps=self.eps,
                                    norm=self.norm)
        return robust & still, jnp.where((robust & ~still).reshape(bshape), adv, x_adv)

      for t in range(o["n_target_classes"]):
        if not bool(jnp.any(robust)):
          break
        st = fab_lib.FAB.init(x, targets[t])
        st = self._loop("fab", algo, None, v, x, y, st, o["fab_iter"])
        robust, x_adv = self._jit(("fab", "fin"), fin)(v, x, y, st, robust, x_adv)
      return x_adv, robust
    if name == "square":
      algo = square_lib.Square(eps=self.eps, norm=self.norm, n_queries=o["n_queries"],
                               p_init=o["p_init"])
      st = self._jit(("square", "init"), lambda v, x, y, k, a: algo.init(
          lambda z: self.model_fn(v, z), x, y, k, a))(v, x, y, rng, active)
      if bool(square_lib.Square.pending(st)):
        st = self._loop("square", algo, None, v, x, y, st, o["n_queries"],
                        pending=self._jit(("square", "pending"), square_lib.Square.pending))
      xa, r, _ = self._jit(("square", "result"), lambda v, x, y, st: square_lib.Square.result(
          lambda z: self.model_fn(v, z), x, y, st))(v, x, y, st)
      return xa, r
    raise ValueError(f"Unknown attack {name!r}; valid: {list(ATTACKS)}")
