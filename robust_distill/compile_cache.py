"""JAX's persistent compilation cache, switched on by the command-line entry points.

On a CPU, compiling the training step, the evaluation attacks and AutoAttack's programs takes a
large share of every short run (a smoke run of the quickstart: 75 s with an empty cache, 26 s
with a warm one). The cache keeps each compiled program on disk, keyed by the program, the
devices and the jax/jaxlib version, so that a rerun, a resumed run after preemption, or the next
run of a sweep skips the compilation. Results do not depend on it.

Where: ``$JAX_COMPILATION_CACHE_DIR`` if it is set (JAX's own variable; a ``gs://`` path works
on TPU pods), else ``$XDG_CACHE_HOME/robust_distill/jax`` (``~/.cache/robust_distill/jax``).
``ROBUST_DISTILL_COMPILE_CACHE=off`` switches it off. Like the host-device flag it is set
through environment variables before JAX is imported, so this module imports nothing but the
standard library.

Size: a local directory is trimmed to ``MAX_BYTES`` once, when a process starts (least recently
used programs first). JAX's own cap (``JAX_COMPILATION_CACHE_MAX_SIZE``) is left off unless the
user sets it: with it, JAX lists and stats every file of the cache at each write and locks a
file at each read, a cost that grows with the cache (a quarter of the test suite's time; on a
``gs://`` cache, a bucket listing per compiled program). A remote cache is never trimmed here;
give its bucket a lifecycle rule instead.
"""

import os
import sys

ENV_SWITCH = "ROBUST_DISTILL_COMPILE_CACHE"
MAX_BYTES = 2 << 30
_SUFFIX, _JAX_ATIME = "-cache", "-atime"  # JAX's file names: KEY-cache (and KEY-atime if capped)


def default_dir() -> str:
  """``$XDG_CACHE_HOME/robust_distill/jax`` (``~/.cache/robust_distill/jax`` when unset)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "robust_distill", "jax")


def configure() -> str | None:
  """Points JAX's persistent cache at its directory and trims it; returns it (None when off).

  Must run before JAX is imported (it sets JAX's environment variables; afterwards it changes
  nothing and returns what the environment says). Every compiled program is cached, however
  short its compilation: the CPU programs here take 0.1 to 10 s each.
  """
  if os.environ.get(ENV_SWITCH, "").lower() in ("off", "0", "false"):
    return None
  path = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", default_dir())
  if "jax" not in sys.modules:
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", "-1")
    trim(path)
  return path


def trim(path: str, max_bytes: int = MAX_BYTES) -> int:
  """Deletes the least recently used programs of the local cache ``path`` until the rest take
  at most ``max_bytes``; returns the bytes freed. "Used" is a file's later of access and
  modification times (access times may be updated only daily: the order is approximate). A
  remote path (``scheme://...``) or a missing directory is left alone. Best effort, never an
  error: a file another process deletes meanwhile, or one this process may not delete, is
  skipped (processes that start together each trim; a program deleted under a reader is
  compiled again)."""
  if "://" in path or not os.path.isdir(path):
    return 0
  entries = []
  try:
    with os.scandir(path) as it:
      for e in it:
        if not e.name.endswith(_SUFFIX):
          continue
        try:
          if e.is_file(follow_symlinks=False):
            st = e.stat(follow_symlinks=False)
            entries.append((max(st.st_atime, st.st_mtime), st.st_size, e.path))
        except OSError:  # deleted by another process since the listing
          continue
  except OSError:  # unreadable directory: JAX will report it if it matters
    return 0
  total = sum(size for _, size, _ in entries)
  freed = 0
  for _, size, file in sorted(entries):
    if total - freed <= max_bytes:
      break
    try:
      os.unlink(file)
      freed += size
    except FileNotFoundError:  # another process trimmed it: it is gone all the same
      freed += size
    except OSError:  # e.g. a read-only cache shared by several users
      continue
    try:
      os.unlink(file[: -len(_SUFFIX)] + _JAX_ATIME)
    except OSError:
      pass
  return freed
