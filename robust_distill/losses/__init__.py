"""The loss vocabulary: pure per-example functions of arrays, independent of the training loop.

* ``core``: cross-entropy, KL, soft-label KD, the CW margin, reductions;
* ``extra``: MART, attention transfer, the BML triplet and its negatives, AutoAttack's DLR;
* ``distill``: KD with its reductions and teacher transforms, DGAD's MAP/ELS and PCR, IAD;
* ``terms``: the registry a config weights (``loss.<term>``), and ``total_loss``;
* ``methods``: each method's whole loss (``losses.ltd``, ``losses.dgad``, ...).
"""

from robust_distill.losses import core, distill, extra, methods, options, terms
from robust_distill.losses.core import (
  REDUCTIONS,
  cross_entropy,
  cw_margin,
  kl_divergence,
  kl_logits,
  largest_other_logit,
  most_confusing_class,
  reduce,
  soft_label_kd,
  trades_kl,
)
from robust_distill.losses.distill import (
  dgad_kd,
  els_swap,
  iad_introspection,
  kd,
  manipulate_nonmax,
  pcr,
)
from robust_distill.losses.extra import (
  angular_distance,
  attention_map,
  attention_transfer,
  bml_triplet,
  dlr,
  dlr_targeted,
  mart_boosted_ce,
  mart_margin,
  mart_weighted_kl,
  select_negatives,
)
from robust_distill.losses.methods import (
  adaad,
  agkd_bml,
  ard,
  dgad,
  iad,
  logit_kd,
  ltd,
  mart,
  pgd_at,
  rslad,
  trades,
)
from robust_distill.losses.terms import Forwards, total_loss

__all__ = [
  "REDUCTIONS",
  "Forwards",
  "adaad",
  "agkd_bml",
  "angular_distance",
  "ard",
  "attention_map",
  "attention_transfer",
  "bml_triplet",
  "core",
  "cross_entropy",
  "cw_margin",
  "dgad",
  "dgad_kd",
  "distill",
  "dlr",
  "dlr_targeted",
  "els_swap",
  "extra",
  "iad",
  "iad_introspection",
  "kd",
  "kl_divergence",
  "kl_logits",
  "largest_other_logit",
  "logit_kd",
  "ltd",
  "manipulate_nonmax",
  "mart",
  "mart_boosted_ce",
  "mart_margin",
  "mart_weighted_kl",
  "methods",
  "options",
  "most_confusing_class",
  "pcr",
  "pgd_at",
  "reduce",
  "rslad",
  "select_negatives",
  "soft_label_kd",
  "terms",
  "total_loss",
  "trades",
  "trades_kl",
]
