"""Command-line entry point: ``python -m robust_distill.main --config=FILE[:ARG] [--workdir=DIR]``.

Without ``--workdir`` the run goes to ``runs/<config file stem>[_<ARG>]`` (``..._steps<N>`` for a
``--config.steps=N`` smoke run, so that a smoke run never resumes into a real one).

Any config field can be overridden: ``--config.student.optim.epochs=2``. The number of CPU host
devices (``--host_devices``, measured default 2) is applied first, before JAX is imported; it
has no effect on GPU/TPU hosts. ``--config.distributed=True`` calls
``jax.distributed.initialize`` first (multi-host runs; ``--config.coordinator``,
``num_processes`` and ``process_id`` default to what the TPU or SLURM environment says; see
launch/).
This file is intentionally short: the work is in ``robust_distill.train.loop``.
"""

from robust_distill import compile_cache, cpu_devices

cpu_devices.configure_from_argv()  # before JAX is imported: XLA reads the flag once
compile_cache.configure()  # likewise: JAX reads its cache settings at import

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from robust_distill import errors, parallel
from robust_distill.train import loop, resume

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Directory for checkpoints, logs and results (default: runs/<config>)."
)
flags.DEFINE_integer(
  cpu_devices.FLAG[2:],
  cpu_devices.DEFAULT_HOST_DEVICES,
  "CPU host devices (read before JAX starts; no effect on GPU/TPU).",
)
_VERBOSE = flags.DEFINE_bool("verbose", False, "On an error, show the traceback too.")
flags.mark_flags_as_required(["config"])


def default_workdir(config_arg: str, steps: int) -> str:
  """``runs/<stem>[_<arg>][_steps<N>]`` for ``--config=path/<stem>.py[:<arg>]``."""
  path, _, arg = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  if arg:
    name += "_" + re.sub(r"[^A-Za-z0-9_.-]+", "-", arg)
  if steps > 0:
    name += f"_steps{steps}"
  return os.path.join("runs", name)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save/restore at INFO
  try:
    try:
      config = _CONFIG.value
    except errors.CONFIG_LOADING as e:
      raise ValueError(f"cannot load --config: {errors.one_line(e)}") from e
    # Before anything touches a JAX backend (the config check builds abstract models).
    parallel.initialize_distributed(
      config.distributed, config.coordinator, config.num_processes, config.process_id
    )
    # loop.run validates the config (once) before anything else.
    workdir = _WORKDIR.value or default_workdir(
      config_flags.get_config_filename(flags.FLAGS["config"]), config.steps
    )
    loop.run(config, workdir)
  except loop.Interrupted as e:
    print(e, flush=True)
    sys.exit(3)
  except resume.ConfigMismatch as e:
    fail(f"cannot resume: {errors.one_line(e)}", verbose=_VERBOSE.value)
  except errors.EXPECTED as e:
    fail(errors.one_line(e), verbose=_VERBOSE.value)


def fail(message: str, *, verbose: bool):
  """Exits with ``error: <message>`` (and the traceback with ``--verbose``)."""
  if verbose:
    raise
  sys.exit(f"error: {message}")


def _parse(argv):
  """absl's flag parsing, with its errors as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: bad command line: {errors.one_line(e)}")


def cli():
  """``app.run(main)``, with the errors of flag parsing (a bad ``--config.x=y`` override, a
  config file that fails to load) as one line too."""
  try:
    app.run(main, flags_parser=_parse)
  except errors.CONFIG_LOADING as e:
    message = errors.one_line(e)
    if isinstance(e, (AttributeError, KeyError)) and "has no attribute" not in message:
      # an override naming no field of the config
      plain = message.replace("\\", "")
      found = re.search(r"'(\w+)'", plain)
      key = found.group(1) if found else plain
      hint = re.search(r'Did you mean "(\w+)"', plain)
      used = [a for a in sys.argv if a.startswith("--config.") and key in a.split("=")[0]]
      message = (
        f"no config field {key!r}"
        + (f" (in {used[0]})" if used else "")
        + (f"; did you mean {hint.group(1)!r}?" if hint else "")
      )
    fail(f"bad command line: {message}", verbose="--verbose" in sys.argv)


if __name__ == "__main__":
  cli()
