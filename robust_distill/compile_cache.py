"""JAX's persistent compilation cache, switched on by the command-line entry points.

On a CPU, compiling the training step, the evaluation attacks and AutoAttack's programs takes a
large share of every short run (a smoke run of the quickstart: 75 s with an empty cache, 26 s
with a warm one). The cache keeps each compiled program on disk, keyed by the program, the
devices and the jax/jaxlib version, so that a rerun, a resumed run after preemption, or the next
run of a sweep skips the compilation. Results do not depend on it.

Where: ``$JAX_COMPILATION_CACHE_DIR`` if it is set (JAX's own variable; a ``gs://`` path works
on TPU pods), else ``$XDG_CACHE_HOME/robust_distill/jax`` (``~/.cache/robust_distill/jax``),
capped at ``MAX_BYTES`` (least recently used programs are evicted).
``ROBUST_DISTILL_COMPILE_CACHE=off`` switches it off. Like the host-device flag it is set
through environment variables before JAX is imported, so this module imports nothing but the
standard library.
"""

import os
import sys

ENV_SWITCH = "ROBUST_DISTILL_COMPILE_CACHE"
MAX_BYTES = 2 << 30


def default_dir() -> str:
  """``$XDG_CACHE_HOME/robust_distill/jax`` (``~/.cache/robust_distill/jax`` when unset)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "robust_distill", "jax")


def configure() -> str | None:
  """Points JAX's persistent cache at its directory; returns it (None when switched off).

  Must run before JAX is imported (it sets JAX's environment variables; afterwards it changes
  nothing and returns what the environment says). Every compiled program is cached, however
  short its compilation: the CPU programs here take 0.1 to 10 s each.
  """
  if os.environ.get(ENV_SWITCH, "").lower() in ("off", "0", "false"):
    return None
  path = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", default_dir())
  if "jax" not in sys.modules:
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(MAX_BYTES))
  return path
