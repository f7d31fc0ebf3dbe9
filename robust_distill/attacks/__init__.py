"""Public attacks: pure functions of a logits function, independent of the training loop.

Every attack is a pure function of a logits function and returns ``(x_adv, robust)``;
``threat`` holds the shared balls, projections and starts, ``objectives`` the shared objectives.

* ``pgd`` (this package): PGD / CW-inf / targeted / KL objectives, L-inf or L2;
* ``apgd.apgd``, ``apgd.apgd_targeted``: APGD-CE / DLR and APGD-T (Croce & Hein 2020);
* ``fab.fab_targeted``: FAB-T; ``square.square``: the Square attack;
* ``autoattack.run``: the AutoAttack protocol (standard / rand / a custom list) on one batch.
"""

from robust_distill.attacks import apgd, autoattack, fab, objectives, square, threat
from robust_distill.attacks.pgd import (
  INITS,
  NORMS,
  OBJECTIVES,
  check_names,
  default_unroll,
  pgd,
  project,
  random_init,
)

__all__ = [
  "INITS",
  "NORMS",
  "OBJECTIVES",
  "apgd",
  "autoattack",
  "check_names",
  "default_unroll",
  "fab",
  "objectives",
  "pgd",
  "project",
  "random_init",
  "square",
  "threat",
]
