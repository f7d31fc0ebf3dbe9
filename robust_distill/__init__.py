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
  """Restores a trained model from a training ``workdir``, on any number of devices.

  Returns a callable ``model(images) -> logits`` (NHWC images in [0, 1]; eval mode; logits
  divided by the stage's fixed temperature: exactly the function that was trained and
  evaluated) with attributes ``config`` (the run's config), ``history`` (the records of the
  stage's ``metrics.jsonl``: training and validation metrics by step), ``step``, ``stage``,
  ``temperature`` and ``module`` (the Flax NNX module). ``which``: 'best' (by validation PGD
  accuracy; the default) or 'latest'; ``stage``: 'student' (default when trained) or 'teacher'.
  """
  from robust_distill.train import checkpoint  # pylint: disable=import-outside-toplevel
  return checkpoint.restore(workdir, which=which, stage=stage)
