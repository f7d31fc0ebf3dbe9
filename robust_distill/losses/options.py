"""The options of the loss terms (``loss.<option>`` in a config), with defaults and what each
allows; ``robust_distill.losses.terms`` declares which term reads which option."""

from robust_distill.losses import distill, extra


def _positive(v):
  return v > 0


def _non_negative(v):
  return v >= 0


# Options shared by the terms: name -> (default, check, what is allowed).
OPTIONS: dict[str, tuple] = {
  "kd_teacher_temperature": (1.0, _positive, "> 0"),
  "kd_student_temperature": (1.0, _positive, "> 0"),
  "kd_scale": (1.0, _non_negative, ">= 0"),
  "kd_reduction": ("batchmean", distill.KD_REDUCTIONS.__contains__, list(distill.KD_REDUCTIONS)),
  "kd_teacher_transform": ("none", distill.TRANSFORMS.__contains__, list(distill.TRANSFORMS)),
  "label_smoothing": (0.0, lambda v: 0 <= v < 1, "in [0, 1)"),
  "dgad_map": (1, (0, 1).__contains__, [0, 1]),
  "dgad_els": (1, (0, 1).__contains__, [0, 1]),
  "iad_beta": (0.1, _non_negative, ">= 0"),
  "iad_begin": (0.0, _non_negative, ">= 0 (epochs)"),
  "at_layer": ("last", lambda v: isinstance(v, str) and bool(v), "a feature name"),
  "bml_margin": (0.03, _non_negative, ">= 0"),
  "bml_l2": (0.001, _non_negative, ">= 0"),
  "bml_negative": ("pool", extra.NEGATIVE_SOURCES.__contains__, list(extra.NEGATIVE_SOURCES)),
  "bml_pool_size": (8, lambda v: v >= 1, ">= 1"),
}
