"""Command-line entry point: ``python -m robust_distill.main --config=FILE[:ARG] [--workdir=DIR]``.

Without ``--workdir`` the run goes to ``runs/<config file stem>[_<ARG>]`` (``..._steps<N>`` for a
``--config.steps=N`` smoke run, so that a smoke run never resumes into a real one).

Any config field can be overridden: ``--config.student.optim.epochs=2``. The number of CPU host
devices (``--host_devices``, measured default 8) is applied first, before JAX is imported; it
has no effect on GPU/TPU hosts. ``--config.distributed=True`` calls
``jax.distributed.initialize`` first (multi-host runs; ``--config.coordinator``,
``num_processes`` and ``process_id`` default to what the TPU or SLURM environment says; see
launch/).
This file is intentionally short: the work is in ``robust_distill.train.loop``.
"""

from robust_distill import cpu_devices

cpu_devices.configure_from_argv()  # before JAX is imported: XLA reads the flag once

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from robust_distill import config as config_lib, parallel
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
  config = _CONFIG.value
  logging.set_verbosity(logging.WARNING)  # orbax logs every save/restore at INFO
  # Before anything touches a JAX backend (the config check builds abstract models).
  parallel.initialize_distributed(
    config.distributed, config.coordinator, config.num_processes, config.process_id
  )
  try:
    config_lib.validate(config)
  except ValueError as e:
    sys.exit(f"Invalid config: {e}")
  try:
    workdir = _WORKDIR.value or default_workdir(
      config_flags.get_config_filename(flags.FLAGS["config"]), config.steps
    )
    loop.run(config, workdir)
  except resume.ConfigMismatch as e:
    sys.exit(f"Cannot resume: {e}")
  except loop.Interrupted as e:
    print(e, flush=True)
    sys.exit(3)


if __name__ == "__main__":
  app.run(main)
