"""XLA's CPU settings, applied by the command-line entry points before JAX starts: the number of
host devices and which operations XLA hands to its YNNPACK library.

Two measured facts (``bench/pgd_step.py``, ``bench/attack_sweep.py``, ``bench/roofline.py``;
docs/performance.md has the tables):

* **YNNPACK fusions.** jaxlib 0.10.2 hands elementwise and reduction fusions to YNNPACK by
  default. Around the convolutions of a backward pass, which run in XLA's own kernels, that
  makes the input gradient of the small CNN 2.5x slower (one device, width 32: forward plus
  input gradient 40 ms against 16 ms per batch of 64 with YNNPACK kept to matrix products).
  ``configure`` therefore sets ``--xla_cpu_experimental_ynn_fusion_type=dot`` unless
  ``XLA_FLAGS`` already chooses.
* **Host devices.** Splitting the CPU into several virtual XLA devices and sharding the batch
  over a ``data`` mesh runs the shards side by side. With YNNPACK kept to matrix products, 2
  devices on a 2-core machine beat 8 (PGD-10 training step 387 against 537 ms; AutoAttack's
  gradient attacks on the width-16 student 1.6-1.7x faster); with the default fusions, 8 had
  been best. Hence the default of 2: re-measure on a machine with more cores
  (``bench/pgd_step.py --host_devices=N``).

XLA reads the flags once, when JAX initialises its CPU backend, so the device count is an entry
point's ``--host_devices`` flag, not a config value: ``configure_from_argv()`` runs first thing
in every entry point. This module imports nothing but the standard library. The flags have no
effect on GPU/TPU hosts.
"""

import os
import sys

DEFAULT_HOST_DEVICES = 2
FLAG = "--host_devices"
# The XLA flags this module sets (public: the tests set them too, for their own device count).
XLA_DEVICE_FLAG = "--xla_force_host_platform_device_count"
XLA_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# YNNPACK for matrix products only (see the module docstring).
YNN_FUSIONS = "dot"


def configure(n: int = DEFAULT_HOST_DEVICES) -> int:
  """Sets XLA_FLAGS so that the CPU platform exposes ``n`` devices; returns the count in effect.

  An explicit count already in XLA_FLAGS wins; once JAX is imported nothing changes (1 is
  returned when no flag was set).
  """
  if n < 1:
    raise ValueError(f"--host_devices={n}: must be >= 1")
  if "jax" in sys.modules:
    return _count_in(os.environ.get("XLA_FLAGS", "")) or 1
  flags = os.environ.get("XLA_FLAGS", "")
  if not any(tok.startswith(XLA_YNN_FLAG + "=") for tok in flags.split()):
    flags = f"{flags} {XLA_YNN_FLAG}={YNN_FUSIONS}"
  count = _count_in(flags)
  if count is None:
    flags, count = f"{flags} {XLA_DEVICE_FLAG}={n}", n
  os.environ["XLA_FLAGS"] = flags.strip()
  return count


def _count_in(flags: str) -> int | None:
  for tok in flags.split():
    if tok.startswith(XLA_DEVICE_FLAG + "="):
      return int(tok.split("=", 1)[1])
  return None


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
