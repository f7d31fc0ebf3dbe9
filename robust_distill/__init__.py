"""robust_distill: adversarially robust knowledge distillation in JAX/Flax NNX.

Importing the package does not import JAX, so that the command-line entry points can set the
number of CPU host devices (``robust_distill.hostdevices``) before JAX starts.

Public entry points:
  * ``robust_distill.restore(workdir)``: a callable model restored from a training workdir.
  * ``robust_distill.losses``: per-example loss functions (optax style).
  * ``robust_distill.attacks``: PGD as a pure function of a logits function.
"""

__version__ = "0.1.0"


def restore(workdir, *, which="best", stage=None):
  """Restores a trained model from ``workdir``; see ``robust_distill.train.checkpoint.restore``."""
  from robust_distill.train import checkpoint  # pylint: disable=import-outside-toplevel
  return checkpoint.restore(workdir, which=which, stage=stage)
