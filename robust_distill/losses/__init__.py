"""Public loss vocabulary: pure per-example functions, independent of the training loop."""

from robust_distill.losses.core import (REDUCTIONS, cross_entropy, cw_margin, kl_divergence,
                                        kl_logits, reduce, soft_label_kd, trades_kl)

__all__ = ["REDUCTIONS", "cross_entropy", "cw_margin", "kl_divergence", "kl_logits", "reduce",
           "soft_label_kd", "trades_kl"]
