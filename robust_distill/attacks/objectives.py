"""The objectives attacks maximise: per-example callables ``fn(logits, target) -> [B]``, shared
by PGD and APGD. ``target`` is what the objective compares with: labels (``ce``, ``cw``,
``dlr``), target labels (``ce_targeted``), a fixed distribution (``kl``), nothing
(``kl_models``, whose logits are a pair) or ``(labels, target_labels)`` (``dlr_targeted``)."""

from typing import Any
from collections.abc import Callable

import jax

from robust_distill.losses import core, extra


def _ce(logits, labels):
  return core.cross_entropy(logits, labels)


def _ce_targeted(logits, target_labels):
  return -core.cross_entropy(logits, target_labels)


def _kl(logits, target_probs):
  return core.kl_divergence(target_probs, logits)


def _kl_models(logits_pair, _):
  moving, reference = logits_pair
  return core.kl_logits(reference, moving)


def _dlr_targeted(logits, labels_and_targets):
  labels, targets = labels_and_targets
  return extra.dlr_targeted(logits, labels, targets)


OBJECTIVES: dict[str, Callable[[Any, Any], jax.Array]] = {
  "ce": _ce,  # CE(f(x'), y): PGD-AT, MART, ARD, IAD; APGD-CE.
  "ce_targeted": _ce_targeted,  # -CE(f(x'), t): move towards class t (AGKD-BML).
  "kl": _kl,  # KL(P || f(x')), P fixed: TRADES (P = p(f(x))), RSLAD.
  "kl_models": _kl_models,  # KL(p(g(x')) || p(f(x'))), both on x': AdaAD, DGAD.
  "cw": core.cw_margin,  # max_{j!=y} z_j - z_y: CW-inf.
  "dlr": extra.dlr,  # AutoAttack's DLR margin: APGD-DLR.
  "dlr_targeted": _dlr_targeted,  # targeted DLR: APGD-T.
}


def check(name: str) -> None:
  if name not in OBJECTIVES:
    raise ValueError(f"Unknown attack objective {name!r}; valid: {sorted(OBJECTIVES)}")
