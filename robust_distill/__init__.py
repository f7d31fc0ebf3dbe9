"""robust_distill: adversarially robust knowledge distillation in JAX/Flax NNX.

Public entry points:
  * ``robust_distill.restore(workdir)``: a callable model restored from a training workdir
    (``robust_distill.workdir.restore``).
  * ``robust_distill.losses``: per-example loss functions and every method's whole loss.
  * ``robust_distill.attacks``: PGD, APGD, FAB, Square and AutoAttack as pure functions of a
    logits function.

This file imports nothing heavy: the command-line entry points live inside the package and set
the number of CPU host devices (an XLA flag read once, when JAX starts) before importing JAX.
"""

__version__ = "0.1.0"


def __getattr__(name):
  if name == "restore":
    # Deferred so that `python -m robust_distill.<entry point>` can set XLA_FLAGS before JAX.
    from robust_distill.workdir import restore  # noqa: PLC0415

    return restore
  raise AttributeError(f"module 'robust_distill' has no attribute {name!r}")
