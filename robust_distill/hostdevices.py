"""Number of XLA host (CPU) devices, applied before JAX is imported.

On CPU, XLA uses two cores poorly inside one device's convolutions; splitting the batch over
several virtual host devices and sharding it over the ``data`` mesh axis runs the shards side by
side. Measured on a 2-core machine (shared/docs/cpu-performance.md and ``bench/pgd_step.py``):
1 device ~0.5x PyTorch eager, 4 devices ~1.1x, 8 devices ~1.25x, 16 devices ~1.1x for the
PGD-10 adversarial training step of the small CNN. Hence the default of 8.

The flag only affects the CPU platform; on GPU/TPU hosts the accelerator devices are used.
"""

import os
import sys

DEFAULT_HOST_DEVICES = 8
_FLAG = "--xla_force_host_platform_device_count"


def configure(n: int = DEFAULT_HOST_DEVICES) -> int:
  """Sets XLA_FLAGS so that the CPU platform exposes ``n`` devices.

  Must run before ``jax`` is imported; if JAX is already imported, the current setting is kept
  and returned unchanged (an explicit flag already in XLA_FLAGS also wins).

  Returns:
    The host device count that will be in effect.
  """
  if n < 1:
    raise ValueError(f"host_devices must be >= 1, got {n}")
  flags = os.environ.get("XLA_FLAGS", "")
  if _FLAG in flags:
    for tok in flags.split():
      if tok.startswith(_FLAG + "="):
        return int(tok.split("=", 1)[1])
  if "jax" in sys.modules:
    return 1
  os.environ["XLA_FLAGS"] = (flags + f" {_FLAG}={n}").strip()
  return n
