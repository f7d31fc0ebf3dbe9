"""Run configs: the schema and defaults (``schema``) and their validation (``check``).

``validate(config)`` rejects unknown names and inconsistent combinations before anything is
computed, with one line naming the field, the value and what is allowed.
"""

from robust_distill.config.check import check_devices, validate
from robust_distill.config.schema import (
  STAGES,
  TEACHER_SOURCES,
  attack,
  base,
  class_pool_size,
  load,
  needs_teacher,
  replay_views,
  smoke_limits,
  stage,
  stage_names,
  train_seed,
  upgrade,
)

__all__ = [
  "STAGES",
  "TEACHER_SOURCES",
  "attack",
  "base",
  "check_devices",
  "class_pool_size",
  "load",
  "needs_teacher",
  "replay_views",
  "smoke_limits",
  "stage",
  "stage_names",
  "train_seed",
  "upgrade",
  "validate",
]
