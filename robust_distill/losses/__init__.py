"""Public loss vocabulary: pure per-example functions, independent of the training loop."""

from robust_distill.losses.core import (REDUCTIONS, cross_entropy, cw_margin, kl_divergence,
                                        kl_logits, reduce, soft_label_kd, trades_kl)

from robust_distill.losses.extra import (angular_distance, attention_map, attention_transfer,
                                         bml_triplet, dlr, dlr_targeted, mart_boosted_ce,
                                         mart_margin, mart_weighted_kl)

__all__ = ["REDUCTIONS", "angular_distance", "attention_map", "attention_transfer", "bml_triplet",
           "cross_entropy", "cw_margin", "dlr", "dlr_targeted", "kl_divergence", "kl_logits",
           "mart_boosted_ce", "mart_margin", "mart_weighted_kl", "reduce", "soft_label_kd",
           "trades_kl"]
