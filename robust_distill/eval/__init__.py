"""Evaluation: clean / PGD-k / CW-inf metrics over a split (``metrics``), the resumable,
sharded AutoAttack runner (``autoattack``; CLI ``python -m robust_distill.eval``), the honesty
checks (``honesty``), the reports (``report``) and the pipeline's eval stage (``stage``).

The submodules and functions below load on first use: ``python -m robust_distill.eval`` imports
this package before its ``__main__``, which must set the number of CPU host devices before JAX
starts (importing JAX here would leave the CLI on one device, whatever ``--host_devices`` says).
"""

import importlib

_SUBMODULES = ("autoattack", "honesty", "metrics", "report", "stage")
_FUNCTIONS = {
  "evaluate": "autoattack",
  "evaluate_stage": "stage",
  "make_eval_fn": "metrics",
  "run_eval": "metrics",
}
__all__ = sorted(_SUBMODULES + tuple(_FUNCTIONS))


def __getattr__(name: str):
  if name in _SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  if name in _FUNCTIONS:
    return getattr(importlib.import_module(f"{__name__}.{_FUNCTIONS[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return __all__
