"""Public attacks: pure functions of a logits function, independent of the training loop."""

from robust_distill.attacks.pgd import (INITS, NORMS, OBJECTIVES, check_names, default_unroll,
                                        pgd, project, random_init)

__all__ = ["INITS", "NORMS", "OBJECTIVES", "check_names", "default_unroll", "pgd", "project",
           "random_init"]
