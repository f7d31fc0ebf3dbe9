"""Public attacks: pure functions of a logits function, independent of the training loop.

* ``pgd`` (this package): PGD / CW-inf / targeted / KL objectives, L-inf or L2;
* ``apgd.apgd``, ``apgd.apgd_targeted``: APGD-CE / DLR and APGD-T (Croce & Hein 2020);
* ``fab.fab_targeted``: FAB-T; ``square.square``: the Square attack;
* ``autoattack.run``: the AutoAttack protocol (standard / rand / a custom list) on one batch.
"""

from robust_distill.attacks.pgd import (INITS, NORMS, OBJECTIVES, check_names, default_unroll,
                                        pgd, project, random_init)
from robust_distill.attacks import apgd, autoattack, fab, square  # pylint: disable=wrong-import-position

__all__ = ["INITS", "NORMS", "OBJECTIVES", "apgd", "autoattack", "check_names", "default_unroll",
           "fab", "pgd", "project", "random_init", "square"]
