"""The number of XLA host (CPU) devices, set by the command-line entry points before JAX starts.

On CPU, XLA uses two cores poorly inside one device's convolutions; splitting the batch over
several virtual host devices and sharding it over the mesh's ``data`` axis runs the shards side
by side. Measured on a 2-core machine with ``bench/pgd_step.py``: 1 device about 0.5x PyTorch's
step, 4 devices about 1.1x, 8 devices about 1.25x, 16 about 1.1x. Hence the default of 8.

XLA reads the flag once, when JAX initialises its CPU backend, so it is an entry point's
``--host_devices`` flag, not a config value: ``configure_from_argv()`` runs first thing in every
entry point. This module imports nothing but the standard library. The flag has no effect on
GPU/TPU hosts.
"""

import os
import sys

DEFAULT_HOST_DEVICES = 8
FLAG = "--host_devices"
_XLA_FLAG = "--xla_force_host_platform_device_count"


def configure(n: int = DEFAULT_HOST_DEVICES) -> int:
  """Sets XLA_FLAGS so that the CPU platform exposes ``n`` devices; returns the count in effect.

  An explicit count already in XLA_FLAGS wins; once JAX is imported nothing changes (1 is
  returned when no flag was set).
  """
  if n < 1:
    raise ValueError(f"--host_devices={n}: must be >= 1")
  flags = os.environ.get("XLA_FLAGS", "")
  for tok in flags.split():
    if tok.startswith(_XLA_FLAG + "="):
      return int(tok.split("=", 1)[1])
  if "jax" in sys.modules:
    return 1
  os.environ["XLA_FLAGS"] = (flags + f" {_XLA_FLAG}={n}").strip()
  return n


def from_argv(argv: list[str]) -> int:
  """The value of ``--host_devices=N`` (or ``--host_devices N``) in ``argv``, else the default."""
  for i, a in enumerate(argv):
    text = None
    if a.startswith(FLAG + "="):
      text = a.split("=", 1)[1]
    elif a == FLAG and i + 1 < len(argv):
      text = argv[i + 1]
    if text is not None:
      try:
        return int(text)
      except ValueError:
        raise ValueError(f"{FLAG}={text!r}: must be a whole number >= 1") from None
  return DEFAULT_HOST_DEVICES


def add_argument(parser) -> None:
  """Declares ``--host_devices`` on an argparse parser (its value was applied before JAX)."""
  parser.add_argument(
    FLAG,
    type=int,
    default=DEFAULT_HOST_DEVICES,
    help="CPU host devices (read before JAX starts; no effect on GPU/TPU)",
  )


def configure_from_argv(argv: list[str] | None = None) -> int:
  """``configure(from_argv(sys.argv))``; a bad value exits with a one-line message."""
  try:
    return configure(from_argv(sys.argv if argv is None else argv))
  except ValueError as e:
    sys.exit(f"error: {e}")
