"""Command-line entry point: ``python -m robust_distill.main --config=FILE[:ARG] --workdir=DIR``.

Any config field can be overridden: ``--config.student.optim.epochs=2``. The number of CPU host
devices (``--config.host_devices``, measured default 8) is applied here, before JAX is imported;
it has no effect on GPU/TPU hosts. ``--config.distributed=True`` calls
``jax.distributed.initialize`` first (multi-host runs; see launch/).
This file is intentionally short: the work is in ``robust_distill.train.loop``.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from robust_distill import hostdevices

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  config = _CONFIG.value
  logging.set_verbosity(logging.WARNING)  # orbax logs every save/restore at INFO
  hostdevices.configure(config.host_devices)
  # JAX is imported only now, after XLA_FLAGS is set.
  from robust_distill import config as config_lib  # pylint: disable=import-outside-toplevel
  from robust_distill import parallel  # pylint: disable=import-outside-toplevel
  from robust_distill.train import loop  # pylint: disable=import-outside-toplevel
  try:
    config_lib.validate(config)
  except ValueError as e:
    sys.exit(f"Invalid config: {e}")
  parallel.initialize_distributed(config.distributed)
  try:
    loop.run(config, _WORKDIR.value)
  except loop.Interrupted as e:
    print(e, flush=True)
    sys.exit(3)


if __name__ == "__main__":
  app.run(main)
