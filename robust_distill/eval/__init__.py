"""Evaluation: clean / PGD-k / CW-inf metrics over a split (``metrics``), the resumable,
sharded AutoAttack runner (``autoattack``; CLI ``python -m robust_distill.eval``), the honesty
checks (``honesty``), the reports (``report``) and the pipeline's eval stage (``stage``)."""

from robust_distill.eval import autoattack, honesty, metrics, report, stage
from robust_distill.eval.autoattack import evaluate
from robust_distill.eval.metrics import make_eval_fn, run_eval
from robust_distill.eval.stage import evaluate_stage

__all__ = [
  "autoattack",
  "evaluate",
  "evaluate_stage",
  "honesty",
  "make_eval_fn",
  "metrics",
  "report",
  "run_eval",
  "stage",
]
