"""The term registry: every loss term a config can weight, with what it reads and its options.

A stage's loss is ``sum_k w_k * mean_i term_k(i)`` over the terms whose config weight ``w_k``
(``loss.<term>``) is non-zero. Each ``Term`` declares its per-example function of a
``Forwards`` record (the arrays the step computed) and which forwards it needs: student logits
on the clean input ``clean``, the training attack's output ``adv`` and AGKD-BML's backward
adversarial example ``bwd``; teacher logits on ``clean`` (precomputable) or ``adv`` (an online
teacher); features. The config's defaults and validation (``robust_distill.config``) and the
train step's forward plan (``robust_distill.train.step``) are derived from this table, so a new
term is one function plus one entry here.
"""

import dataclasses
import math
from typing import Any
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from robust_distill.losses import core, distill, extra
from robust_distill.losses.options import OPTIONS


@dataclasses.dataclass
class Forwards:
  """The arrays a loss reads: ``student[w]`` / ``teacher[w]`` are logits on input ``w``
  (``clean``, ``adv``, ``bwd``; the teacher also ``neg``), ``*_features[w]`` the models'
  feature dicts on it. ``neg_valid`` masks the examples that have an AGKD-BML negative;
  ``key`` seeds random teacher transforms; ``epoch`` drives schedules (IAD)."""

  labels: jax.Array
  student: dict
  teacher: dict = dataclasses.field(default_factory=dict)
  student_features: dict = dataclasses.field(default_factory=dict)
  teacher_features: dict = dataclasses.field(default_factory=dict)
  epoch: Any = 0.0
  key: Any = None
  neg_valid: Any = None

  def get(self, table: str, which: str):
    values = getattr(self, table)
    if which not in values:
      raise ValueError(f"this loss term needs {table}[{which!r}], which the step did not make")
    return values[which]


@dataclasses.dataclass(frozen=True)
class Term:
  """One loss term: ``fn(forwards, options) -> [batch]`` and what it reads."""

  fn: Callable[[Forwards, Mapping], jax.Array]
  student: tuple = ()  # student inputs whose logits or features it reads
  teacher: tuple = ()  # teacher logits: 'clean' (may be precomputed) or 'adv' (online)
  teacher_features: tuple = ()  # online teacher features on these inputs
  options: tuple = ()


def kd_options(o: Mapping, key=None) -> dict:
  """The keyword arguments of ``distill.kd`` from a loss config."""
  return dict(
    teacher_temperature=o["kd_teacher_temperature"],
    student_temperature=o["kd_student_temperature"],
    scale=o["kd_scale"],
    reduction=o["kd_reduction"],
    transform=o["kd_teacher_transform"],
    key=None if key is None else jax.random.fold_in(key, 7),
  )


def _kd(student_input, teacher_input):
  def fn(f, o):
    return distill.kd(
      f.get("teacher", teacher_input), f.get("student", student_input), **kd_options(o, f.key)
    )

  return fn


def _feature(feats: dict, layer: str):
  if layer not in feats:
    raise ValueError(f"loss.at_layer: the model has no feature {layer!r}; it has {sorted(feats)}")
  return feats[layer]


def _attention(student_input, teacher_input, masked):
  def fn(f, o):
    v = extra.attention_transfer(
      _feature(f.get("student_features", student_input), o["at_layer"]),
      _feature(f.get("teacher_features", teacher_input), o["at_layer"]),
    )
    return v * f.neg_valid if masked else v

  return fn


def _triplet(f, o):
  def emb(w):
    return f.get("student_features", w)["embedding"]

  v = extra.bml_triplet(
    emb("adv"), emb("clean"), emb("bwd"), margin=o["bml_margin"], l2_weight=o["bml_l2"]
  )
  return v * f.neg_valid


_KD = (
  "kd_teacher_temperature",
  "kd_student_temperature",
  "kd_scale",
  "kd_reduction",
  "kd_teacher_transform",
)
# The vocabulary, in the order the step sums it (config: loss.<name> = weight).
TERMS: dict[str, Term] = {
  "ce_clean": Term(
    lambda f, o: core.cross_entropy(
      f.get("student", "clean"), f.labels, label_smoothing=o["label_smoothing"]
    ),
    student=("clean",),
    options=("label_smoothing",),
  ),
  "ce_adv": Term(
    lambda f, o: core.cross_entropy(
      f.get("student", "adv"), f.labels, label_smoothing=o["label_smoothing"]
    ),
    student=("adv",),
    options=("label_smoothing",),
  ),
  "trades_kl": Term(
    lambda f, o: core.trades_kl(f.get("student", "clean"), f.get("student", "adv")),
    student=("clean", "adv"),
  ),
  "kd_clean": Term(_kd("clean", "clean"), student=("clean",), teacher=("clean",), options=_KD),
  "kd_adv": Term(_kd("adv", "clean"), student=("adv",), teacher=("clean",), options=_KD),
  "kd_adv_adv": Term(_kd("adv", "adv"), student=("adv",), teacher=("adv",), options=_KD),
  "mart_bce": Term(
    lambda f, o: extra.mart_boosted_ce(f.get("student", "adv"), f.labels), student=("adv",)
  ),
  "mart_kl": Term(
    lambda f, o: extra.mart_weighted_kl(
      f.get("student", "clean"), f.get("student", "adv"), f.labels
    ),
    student=("clean", "adv"),
  ),
  "mart_margin": Term(
    lambda f, o: extra.mart_margin(f.get("student", "adv"), f.labels), student=("adv",)
  ),
  "pcr": Term(
    lambda f, o: distill.pcr(f.get("student", "clean"), f.get("student", "adv")),
    student=("clean", "adv"),
  ),
  "dgad_kd": Term(
    lambda f, o: distill.dgad_kd(
      f.get("student", "clean"),
      f.get("student", "adv"),
      f.get("teacher", "clean"),
      f.get("teacher", "adv"),
      f.labels,
      use_map=bool(o["dgad_map"]),
      use_els=bool(o["dgad_els"]),
      **kd_options(o, f.key),
    ),
    student=("clean", "adv"),
    teacher=("clean", "adv"),
    options=_KD + ("dgad_map", "dgad_els"),
  ),
  "iad_intro": Term(
    lambda f, o: distill.iad_introspection(
      f.get("student", "clean"),
      f.get("student", "adv"),
      f.get("teacher", "adv"),
      f.labels,
      f.epoch,
      beta=o["iad_beta"],
      begin=o["iad_begin"],
    ),
    student=("clean", "adv"),
    teacher=("adv",),
    options=("iad_beta", "iad_begin"),
  ),
  "at_adv": Term(
    _attention("adv", "clean", masked=False),
    student=("adv",),
    teacher_features=("clean",),
    options=("at_layer",),
  ),
  "at_bwd": Term(
    _attention("bwd", "neg", masked=True),
    student=("bwd",),
    teacher_features=("neg",),
    options=("at_layer",),
  ),
  "bml_triplet": Term(_triplet, student=("clean", "adv", "bwd"), options=("bml_margin", "bml_l2")),
}


# Terms that need AGKD-BML's negatives and backward adversarial examples.
BACKWARD_INPUTS = ("bwd", "neg")


def defaults() -> dict:
  """Every term at weight 0 and every option at its default: the ``loss`` block of a stage."""
  return {**{k: 0.0 for k in TERMS}, **{k: v[0] for k, v in OPTIONS.items()}}


def check(loss_cfg: Mapping, where: str = "loss") -> None:
  """Raises ValueError naming the field, the value and what is allowed."""
  unknown = sorted(set(loss_cfg.keys()) - set(TERMS) - set(OPTIONS))
  if unknown:
    raise ValueError(
      f"{where}: unknown loss term(s) or option(s) {unknown}; valid terms: "
      f"{sorted(TERMS)}, options: {sorted(OPTIONS)}"
    )
  for k in TERMS:
    w = loss_cfg.get(k, 0.0)
    if not isinstance(w, (int, float)) or not math.isfinite(w):
      raise ValueError(f"{where}.{k}={w!r}: a term weight must be a finite number")
  for k, (_, ok, allowed) in OPTIONS.items():
    v = loss_cfg.get(k, OPTIONS[k][0])
    if (isinstance(v, float) and not math.isfinite(v)) or not ok(v):
      raise ValueError(f"{where}.{k}={v!r}: allowed {allowed}")
  if not active_terms(loss_cfg):
    raise ValueError(f"{where}: every term has weight 0; set at least one of {sorted(TERMS)}")


def active_terms(loss_cfg: Mapping) -> dict[str, float]:
  """The (name, weight) pairs with a non-zero weight, in vocabulary order."""
  return {k: float(loss_cfg[k]) for k in TERMS if float(loss_cfg.get(k, 0.0)) != 0.0}


def _active(loss_cfg):
  return [TERMS[k] for k in active_terms(loss_cfg)]


def student_inputs(loss_cfg) -> list[str]:
  """The student forwards the loss needs, in the order the step runs them (BatchNorm
  statistics chain along this order)."""
  needed = {w for t in _active(loss_cfg) for w in t.student}
  return [w for w in ("clean", "adv", "bwd") if w in needed]


def teacher_inputs(loss_cfg) -> list[str]:
  """Teacher logits the loss reads on inputs other than ``clean``: each an online forward."""
  return sorted({w for t in _active(loss_cfg) for w in t.teacher if w != "clean"})


def teacher_feature_inputs(loss_cfg) -> list[str]:
  return sorted({w for t in _active(loss_cfg) for w in t.teacher_features})


def online_terms(loss_cfg) -> list[str]:
  """Active terms that run the teacher inside the step (on adversarial inputs or for its
  features): they need ``teacher.source='online'``."""
  return [
    k
    for k in active_terms(loss_cfg)
    if TERMS[k].teacher_features or set(TERMS[k].teacher) - {"clean"}
  ]


def needs_teacher_logits(loss_cfg) -> bool:
  return any(t.teacher or t.teacher_features for t in _active(loss_cfg))


def needs_backward(loss_cfg) -> bool:
  """Whether the loss reads AGKD-BML's negatives or backward adversarial examples."""
  return any(set(t.student + t.teacher_features) & set(BACKWARD_INPUTS) for t in _active(loss_cfg))


def feature_terms(loss_cfg) -> list[str]:
  return [k for k in active_terms(loss_cfg) if "at_layer" in TERMS[k].options]


def total_loss(loss_cfg: Mapping, forwards: Forwards) -> tuple[jax.Array, dict]:
  """``(sum_k w_k mean(term_k), {term: mean value})`` over the active terms."""
  terms = active_terms(loss_cfg)
  values = {k: jnp.mean(TERMS[k].fn(forwards, loss_cfg)) for k in terms}
  return sum(w * values[k] for k, w in terms.items()), values
