"""AutoAttack's versions, attack names and options (``robust_distill.attacks.autoattack`` runs
them): ``standard`` = APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries),
each with 100 iterations and one restart; ``rand`` = APGD-CE and APGD-DLR with the gradient
averaged over 20 draws (for randomized defences)."""

from collections.abc import Sequence


ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")


VERSIONS = {
  "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
  "rand": ("apgd-ce", "apgd-dlr"),
}


# AutoAttack's defaults; ``attack_batch(..., **overrides)`` changes them (tests use fewer steps).
# ``unroll=1``: the APGD and FAB iteration loops stay rolled. Unlike the 10-step PGD of training
# (docs/performance.md), their bodies are large enough that XLA:CPU runs the rolled
# loop as fast as the unrolled one (APGD-CE, small CNN, batch 256, 8 host devices: 9.5 s vs
# 9.1 s per 100 iterations), while unrolling 100 iterations costs ~2 minutes of compilation.
# ``chunk``: straight-line iterations per compiled call of ``HostRunner`` and Square queries per
# ``while_loop`` turn in ``attack_batch`` (0: 10 on CPU, 1 on accelerators).
# ``driver``: how ``robust_distill.eval`` runs the loops: 'host' (``HostRunner``), 'device'
# (``attack_batch`` in one ``jax.jit``) or 'auto' (host on CPU, device on GPU/TPU).
DEFAULTS = dict(
  n_iter=100,
  n_target_classes=9,
  n_queries=5000,
  p_init=0.8,
  rho=0.75,
  eot_iter=1,
  fab_iter=100,
  unroll=1,
  chunk=0,
  driver="auto",
)


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
    raise ValueError(
      f"Unknown attack(s) {bad or attacks!r}; valid: versions "
      f"{sorted(VERSIONS)} or a comma-separated list of {list(ATTACKS)}"
    )
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
