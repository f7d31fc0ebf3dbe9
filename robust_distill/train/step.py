"""The jitted adversarial training step, built from a stage config.

One step: (1) teacher logits (precomputed in the batch, or an online teacher forward);
(2) the attack (``robust_distill.attacks.pgd`` on the model with an explicit BatchNorm mode), and
when a term needs them, AGKD-BML's negatives (a clean image of the most confusing class, from
the batch or from a class-indexed pool the input pipeline samples) and their backward
adversarial examples; (3) the loss, a config-weighted sum of per-example terms from ``LOSS_TERMS``; a term whose weight
is 0 is never traced, so it costs nothing; (4) an optax update. The step is a pure function
``(state, batch, rng, teacher_vars) -> (state, metrics)`` meant for ``jax.jit`` with the state
donated and the batch sharded over the mesh's ``data`` axis.

The model's output is ``logits / temperature`` where ``temperature`` is the stage's fixed output
temperature (LTD's student temperature ``tau_S``); the same function is attacked, trained and
evaluated.
"""

import dataclasses
import functools
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from robust_distill import attacks
from robust_distill.analysis import logits as logit_analysis
from robust_distill.losses import core, extra

# Objectives the training attack can maximise (config: attack.objective).
ATTACK_OBJECTIVES = {
    "ce": "CE(S(x'), y): PGD-AT (Madry et al. 2018)",
    "kl_self": "KL(p(S(x)) || p(S(x'))): TRADES / LTD",
    "kl_teacher": "KL(p(T(x)) || p(S(x'))): RSLAD",
    "kl_models": "KL(p(T(x')) || p(S(x'))): AdaAD / DGAD (needs an online teacher)",
    "cw": "max_{j!=y} S(x')_j - S(x')_y",
    "ce_confusing": "-CE(S(x'), m), m = argmax_{c!=y} S(x)_c: AGKD-BML's forward AE, targeted "
                    "to the most confusing class",
}
# Where AGKD-BML's negatives (clean images of the most confusing class) come from.
NEGATIVE_SOURCES = ("pool", "batch")
BN_MODES = ("eval", "train")


@dataclasses.dataclass
class Context:
  """Lazily computed forwards shared by the loss terms of one step (traced once each).

  The inputs are named: ``clean`` (x), ``adv`` (x', the training attack's output), ``neg``
  (x2, AGKD-BML's clean negative of the most confusing class) and ``bwd`` (x2', its backward
  adversarial example, targeted to y). ``neg_valid`` masks the examples that have a negative.
  """
  apply: Callable
  params: Any
  stats: Any
  x: jax.Array
  x_adv: jax.Array
  y: jax.Array
  teacher_logits: Any
  cfg: Any
  teacher_fn: Callable | None = None
  epoch: Any = 0.0
  key: Any = None
  x_neg: Any = None
  x_bwd: Any = None
  neg_valid: Any = None
  _cache: dict = dataclasses.field(default_factory=dict)

  def _input(self, which):
    x = {"clean": self.x, "adv": self.x_adv, "neg": self.x_neg, "bwd": self.x_bwd}[which]
    if x is None:
      raise ValueError(f"this loss term needs the {which!r} input, which the step did not make")
    return x

  def _student(self, which):
    if which not in self._cache:
      (logits, feats), self.stats = self.apply(self.params, self.stats, self._input(which),
                                               train=True, features=True)
      self._cache[which] = logits
      self._cache["features/" + which] = feats
    return self._cache[which], self._cache.get("features/" + which, {})

  def student(self, which: str):
    """Student logits on ``which`` (clean, adv, bwd) in train mode; BN stats chain along."""
    return self._student(which)[0]

  def student_features(self, which: str) -> dict:
    """The student's features (``embedding``, ``last``, ...) on ``which``, same forward."""
    return self._student(which)[1]

  def teacher(self, which: str = "clean"):
    """Teacher logits (constants) on the clean input (precomputed or online) or on x_adv."""
    if which == "clean":
      if self.teacher_logits is None:
        raise ValueError("this loss term needs teacher logits, but the stage has no teacher")
      return self.teacher_logits
    return self._teacher(which)[0]

  def teacher_features(self, which: str) -> dict:
    """The online teacher's features (constants) on ``which`` (clean, neg, adv)."""
    return self._teacher(which)[1]

  def _teacher(self, which):
    key = "teacher/" + which
    if key not in self._cache:
      if self.teacher_fn is None:
        raise ValueError("this loss term runs the teacher inside the step (on adversarial "
                         "inputs or for its features): set teacher.source='online'")
      self._cache[key] = jax.lax.stop_gradient(self.teacher_fn(self._input(which),
                                                               features=True))
    return self._cache[key]


def _kd_values(ctx, teacher_logits, student_logits):
  """``kd_scale * KL(softmax(z_T / tau_T) || softmax(z_S / tau_loss))`` per example (``tau_loss``
  = ``kd_student_temperature``, a loss-only temperature as in ARD; the stage's ``temperature`` is
  part of the model and already in ``z_S``), divided by the number
  of classes when ``kd_reduction='mean_all'`` (PyTorch ``KLDivLoss()`` default, as in ARD,
  RSLAD and AdaAD's CIFAR-10 code)."""
  c = ctx.cfg
  if c.kd_teacher_transform != "none":
    teacher_logits = logit_analysis.manipulate_nonmax(
        teacher_logits, c.kd_teacher_transform,
        None if ctx.key is None else jax.random.fold_in(ctx.key, 7))
  v = core.soft_label_kd(teacher_logits, student_logits,
                         teacher_temperature=c.kd_teacher_temperature,
                         student_temperature=c.kd_student_temperature,
                         temperature_scale=c.kd_scale)
  if c.kd_reduction == "mean_all":
    v = v / student_logits.shape[-1]
  return v


def _kd(ctx, which, teacher_input="clean"):
  return _kd_values(ctx, ctx.teacher(teacher_input), ctx.student(which))


def els_swap(logits: jax.Array, labels: jax.Array, where: jax.Array) -> jax.Array:
  """DGAD's error-corrective label swapping on logits: where ``where`` is True, exchange the
  true class's logit with the largest other logit when that one is larger (so the true class
  becomes the argmax); elsewhere the logits are unchanged (Park & Min, ECCV 2024)."""
  c = logits.shape[-1]
  onehot = jax.nn.one_hot(labels, c, dtype=bool)
  k = jnp.argmax(jnp.where(onehot, -jnp.inf, logits), -1)
  z_y = jnp.take_along_axis(logits, labels[:, None], -1)
  z_k = jnp.take_along_axis(logits, k[:, None], -1)
  swap = (where & (z_y[:, 0] < z_k[:, 0]))[:, None]
  onek = jax.nn.one_hot(k, c, dtype=bool)
  swapped = jnp.where(onehot, z_k, jnp.where(onek, z_y, logits))
  return jnp.where(swap, swapped, logits)


def _dgad_kd(ctx):
  r"""DGAD's MAP + ELS distillation (per example):
  :math:`m_i \mathrm{KL}(p(T'(x_i)) \| p(S(x_i))) + (1 - m_i) \mathrm{KL}(p(T'(x'_i)) \|
  p(S(x'_i)))`, :math:`m_i = [\arg\max T(x_i) \ne y_i]` (MAP; ``dgad_map=0`` sets m = 0),
  T' = ELS-swapped teacher logits (``dgad_els=0`` turns the swap off). The batch mean of this is
  the code's ``(n/bs) L_clean + ((bs - n)/bs) L_adv``."""
  c = ctx.cfg
  t_clean, t_adv = ctx.teacher("clean"), ctx.teacher("adv")
  wrong = jnp.argmax(t_clean, -1) != ctx.y
  if c.dgad_els:
    t_clean = els_swap(t_clean, ctx.y, wrong)
    t_adv = els_swap(t_adv, ctx.y, jnp.ones_like(wrong))
  m = wrong if c.dgad_map else jnp.zeros_like(wrong)
  kd_c = _kd_values(ctx, t_clean, ctx.student("clean"))
  kd_a = _kd_values(ctx, t_adv, ctx.student("adv"))
  return jnp.where(m, kd_c, kd_a)


def _pcr(ctx):
  """DGAD's predictive consistency: mean over classes of (p(S(x')) - p(S(x)))^2 (both sides
  differentiated, as in the code)."""
  return jnp.mean((jax.nn.softmax(ctx.student("adv")) - jax.nn.softmax(ctx.student("clean"))) ** 2,
                  -1)


def _iad_intro(ctx):
  r"""IAD's introspection term (Zhu et al., ICLR 2022, IAD-I code):
  :math:`(1 - a_i) \mathrm{KL}(p(S(x_i)) \| p(S(x'_i)))` with the teacher's reliability
  :math:`a_i = \mathrm{sg}(p(T(x'_i))_{y_i})^{\beta}` (``iad_beta``); before epoch ``iad_begin``
  the term is 0 (a_i = 1)."""
  c = ctx.cfg
  p_t = jax.nn.softmax(ctx.teacher("adv"))
  a = jnp.take_along_axis(p_t, ctx.y[:, None], -1)[:, 0] ** c.iad_beta
  a = jnp.where(ctx.epoch >= c.iad_begin, a, 1.0)
  return (1.0 - a) * core.trades_kl(ctx.student("clean"), ctx.student("adv"))


def _feature(feats: dict, layer: str):
  if layer not in feats:
    raise ValueError(f"loss.at_layer: the model has no feature {layer!r}; it has "
                     f"{sorted(feats)}")
  return feats[layer]


def _attention(ctx, student_input, teacher_input):
  r"""AGKD-BML's attention transfer (Wang et al., ICCV 2021): mean over positions of
  :math:`|A(F^S(\text{student\_input})) - A(F^T(\text{teacher\_input}))|` at layer
  ``at_layer`` (default ``last``, the map that feeds the classifier, as in the code)."""
  layer = ctx.cfg.at_layer
  v = extra.attention_transfer(_feature(ctx.student_features(student_input), layer),
                               _feature(ctx.teacher_features(teacher_input), layer))
  return v if student_input != "bwd" else v * ctx.neg_valid


def _bml_triplet(ctx):
  r"""AGKD-BML's bidirectional metric-learning triplet on the student's pooled embedding:
  anchor x' (forward AE), positive x, negative x2' (backward AE), angular distance, margin
  ``bml_margin`` plus ``bml_l2`` times the embeddings' mean squares; 0 where no negative."""
  emb = lambda w: ctx.student_features(w)["embedding"]
  v = extra.bml_triplet(emb("adv"), emb("clean"), emb("bwd"), margin=ctx.cfg.bml_margin,
                        l2_weight=ctx.cfg.bml_l2)
  return v * ctx.neg_valid


# Loss vocabulary: name -> per-example function of the step context (config: loss.<name> = w).
LOSS_TERMS: dict[str, Callable[[Context], jax.Array]] = {
    "ce_clean": lambda ctx: core.cross_entropy(ctx.student("clean"), ctx.y,
                                               label_smoothing=ctx.cfg.label_smoothing),
    "ce_adv": lambda ctx: core.cross_entropy(ctx.student("adv"), ctx.y,
                                             label_smoothing=ctx.cfg.label_smoothing),
    "trades_kl": lambda ctx: core.trades_kl(ctx.student("clean"), ctx.student("adv")),
    "kd_clean": lambda ctx: _kd(ctx, "clean"),
    "kd_adv": lambda ctx: _kd(ctx, "adv"),
    "kd_adv_adv": lambda ctx: _kd(ctx, "adv", teacher_input="adv"),
    "mart_bce": lambda ctx: extra.mart_boosted_ce(ctx.student("adv"), ctx.y),
    "mart_kl": lambda ctx: extra.mart_weighted_kl(ctx.student("clean"), ctx.student("adv"), ctx.y),
    "mart_margin": lambda ctx: extra.mart_margin(ctx.student("adv"), ctx.y),
    "pcr": _pcr,
    "dgad_kd": _dgad_kd,
    "iad_intro": _iad_intro,
    "at_adv": lambda ctx: _attention(ctx, "adv", "clean"),
    "at_bwd": lambda ctx: _attention(ctx, "bwd", "neg"),
    "bml_triplet": _bml_triplet,
}
# Terms that read the student's clean / adversarial outputs (fixes the BN forward order).
_NEEDS = {"ce_clean": ("clean",), "ce_adv": ("adv",), "trades_kl": ("clean", "adv"),
          "kd_clean": ("clean",), "kd_adv": ("adv",), "kd_adv_adv": ("adv",),
          "mart_bce": ("adv",), "mart_kl": ("clean", "adv"), "pcr": ("clean", "adv"),
          "dgad_kd": ("clean", "adv"), "iad_intro": ("clean", "adv"), "mart_margin": ("adv",),
          "at_adv": ("adv",), "at_bwd": ("bwd",), "bml_triplet": ("clean", "adv", "bwd")}
TEACHER_TERMS = ("kd_clean", "kd_adv", "kd_adv_adv", "dgad_kd", "iad_intro", "at_adv", "at_bwd")
# Terms that run the teacher inside the step, on adversarial inputs or for its features (need
# teacher.source='online').
ONLINE_TEACHER_TERMS = ("kd_adv_adv", "dgad_kd", "iad_intro", "at_adv", "at_bwd")
# Terms that need AGKD-BML's negatives and backward adversarial examples.
BACKWARD_TERMS = ("at_bwd", "bml_triplet")
LOSS_OPTIONS = ("kd_teacher_temperature", "kd_student_temperature", "kd_scale", "kd_reduction",
                "kd_teacher_transform", "label_smoothing",
                "dgad_map", "dgad_els", "iad_beta", "iad_begin",
                "at_layer", "bml_margin", "bml_l2", "bml_negative", "bml_pool_size")
KD_REDUCTIONS = ("batchmean", "mean_all")


def active_terms(loss_cfg) -> dict[str, float]:
  """The (name, weight) pairs with a non-zero weight, in vocabulary order."""
  return {k: float(loss_cfg[k]) for k in LOSS_TERMS if float(loss_cfg.get(k, 0.0)) != 0.0}


def needs_teacher(stage_cfg) -> bool:
  return (any(t in active_terms(stage_cfg.loss) for t in TEACHER_TERMS)
          or stage_cfg.attack.objective in ("kl_teacher", "kl_models"))


def needs_backward(stage_cfg) -> bool:
  """Whether the stage makes AGKD-BML's negatives and backward adversarial examples."""
  return any(t in active_terms(stage_cfg.loss) for t in BACKWARD_TERMS)


def class_pool_size(stage_cfg) -> int:
  """Images per class the input pipeline must add to each batch (``pool_image``), or 0."""
  if needs_backward(stage_cfg) and stage_cfg.loss.bml_negative == "pool":
    return int(stage_cfg.loss.bml_pool_size)
  return 0


@functools.lru_cache(maxsize=64)
def make_apply(graphdef, temperature: float = 1.0):
  """``apply(params, stats, x, train, features=False) -> (out, new_stats)``, x in [0, 1]; ``out``
  is ``logits / temperature``, or ``(logits / temperature, features)`` with ``features``.

  The same (architecture, temperature) gives the same function object, so programs compiled
  for one checkpoint (keyed on ``apply``) are reused for the next one of that architecture."""

  def apply(params, stats, x, *, train: bool, features: bool = False):
    m = nnx.merge(graphdef, params, stats, copy=True)
    if train:
      m.train()
    else:
      m.eval()
    if features:
      logits, feats = m(x, return_features=True)
      return (logits / temperature, feats), nnx.state(m, nnx.BatchStat)
    return m(x) / temperature, nnx.state(m, nnx.BatchStat)

  return apply


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(optim_cfg, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum and PyTorch-style (coupled) weight decay, or Adam (coupled decay too);
  piecewise-constant, cosine or constant learning rate."""
  total = max(int(optim_cfg.epochs * steps_per_epoch), 1)
  if optim_cfg.schedule == "piecewise":
    bounds = {int(round(e * steps_per_epoch)): optim_cfg.decay_factor
              for e in optim_cfg.decay_epochs}
    lr = optax.piecewise_constant_schedule(optim_cfg.lr, bounds)
  elif optim_cfg.schedule == "cosine":
    lr = optax.cosine_decay_schedule(optim_cfg.lr, total)
  elif optim_cfg.schedule == "constant":
    lr = optax.constant_schedule(optim_cfg.lr)
  else:
    raise ValueError(f"Unknown lr schedule {optim_cfg.schedule!r}; valid: "
                     "['constant', 'cosine', 'piecewise']")
  name = optim_cfg.get("name", "sgd")
  if name == "sgd":
    opt = optax.sgd(lr, momentum=optim_cfg.momentum or None, nesterov=bool(optim_cfg.nesterov))
  elif name == "adam":
    opt = optax.adam(lr)
  else:
    raise ValueError(f"Unknown optimizer {name!r}; valid: {list(OPTIMIZERS)}")
  return optax.chain(optax.add_decayed_weights(optim_cfg.weight_decay), opt)


def most_confusing(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``argmax_{c != y} logits_c``: AGKD-BML's most confusing class of each example."""
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  return jnp.argmax(jnp.where(onehot, -jnp.inf, logits), -1)


def attack_fn(stage_cfg, apply, params, stats, *, teacher_logits=None, teacher_fn=None):
  """``run(x, y, rng, objective=None, target=None) -> x_adv``: the stage's training attack
  (pure, jit-friendly), with the model's BatchNorm in ``attack.bn_mode``.

  ``objective`` overrides the stage's objective (AGKD-BML's backward AE uses ``ce_targeted``
  with ``target`` = the labels to move towards); for ``ce_confusing``, ``target`` is the most
  confusing class (computed from the student on x when not given).
  """
  a = stage_cfg.attack
  train_bn = a.bn_mode == "train"

  def student(xa):
    return apply(params, stats, xa, train=train_bn)[0]

  def run(x, y, rng, objective=None, target=None):
    objective = objective or a.objective
    obj, fn, tgt = objective, student, y if target is None else target
    if objective == "kl_self":
      obj, tgt = "kl", jax.nn.softmax(student(x))
    elif objective == "kl_teacher":
      obj, tgt = "kl", jax.nn.softmax(teacher_logits)
    elif objective == "kl_models":
      if teacher_fn is None:
        raise ValueError("attack.objective='kl_models' needs teacher.source='online'")
      obj, fn, tgt = "kl_models", lambda xa: (student(xa), teacher_fn(xa)), None
    elif objective == "ce_confusing":
      obj = "ce_targeted"
      tgt = most_confusing(student(x), y) if target is None else target
    return attacks.pgd(fn, x, tgt, eps=a.eps, step_size=a.step_size, steps=a.steps,
                       objective=obj, norm=a.norm, init=a.init, rng=rng,
                       unroll=a.unroll if a.unroll > 0 else None)

  return run


def select_negatives(source: str, key, classes, x, y, pool=None):
  """AGKD-BML's negatives: for each example a clean image ``x2`` of class ``classes[i]``.

  ``source='pool'``: a uniform draw from ``pool`` (``[C, K, ...]`` images in [0, 1], K random
  training images per class that the input pipeline samples for every batch); ``'batch'``: a
  uniform draw among the examples of the same batch labelled ``classes[i]``. Returns
  ``(x2, valid)``; ``valid`` is False where the batch holds no image of that class (then ``x2``
  is the example itself and the terms that use it are masked).
  """
  if source == "pool":
    if pool is None:
      raise ValueError("loss.bml_negative='pool' needs the batch's 'pool_image' (the input "
                       "pipeline adds it when step.class_pool_size(stage) > 0)")
    k = jax.random.randint(key, classes.shape, 0, pool.shape[1])
    return pool[classes, k], jnp.ones(classes.shape, bool)
  if source != "batch":
    raise ValueError(f"Unknown bml_negative {source!r}; valid: {list(NEGATIVE_SOURCES)}")
  match = y[None, :] == classes[:, None]
  score = jnp.where(match, jax.random.uniform(key, match.shape), -1.0)
  j = jnp.argmax(score, -1)
  valid = jnp.any(match, -1)
  j = jnp.where(valid, j, jnp.arange(y.shape[0]))
  return x[j], valid


def awp_perturbation(params, grads, *, gamma: float, proxy_lr: float):
  """AWP's weight perturbation ``gamma * v`` (Wu et al., NeurIPS 2020, official code).

  The proxy takes one plain SGD step that *ascends* the loss, ``d = proxy_lr * grad``; for every
  kernel (a parameter with ndim > 1; biases and norm scales are skipped) the perturbation is
  ``v = ||w||_F / (||d||_F + 1e-20) * d``, layer by layer.
  """
  def one(w, g):
    if w.ndim <= 1:
      return jnp.zeros_like(w)
    d = proxy_lr * g
    return gamma * jnp.linalg.norm(w) / (jnp.linalg.norm(d) + 1e-20) * d
  return jax.tree.map(one, params, grads)


def make_train_step(stage_cfg, graphdef, tx, *, teacher_graphdef=None, steps_per_epoch: int = 1):
  """Builds ``step(state, batch, rng, teacher_vars) -> (state, metrics)`` (not yet jitted).

  ``state`` = ``{"params", "stats", "opt", "step"}``; ``batch`` = ``{"image": uint8 NHWC,
  "label", optional "teacher_logits"}``; ``teacher_vars`` = ``(params, stats)`` of an online
  teacher or ``None``. With ``stage_cfg.awp.gamma > 0`` the gradient is taken at the
  AWP-perturbed weights (from epoch ``awp.warmup_epochs`` on), and the update is applied to the
  unperturbed weights: parameters and optimizer state are as if AWP were absent, apart from the
  gradient.
  """
  apply = make_apply(graphdef, stage_cfg.temperature)
  teacher_apply = make_apply(teacher_graphdef) if teacher_graphdef is not None else None
  terms = active_terms(stage_cfg.loss)
  if not terms:
    raise ValueError("the stage's loss has no term with a non-zero weight")
  order = [w for w in ("clean", "adv", "bwd") if any(w in _NEEDS[t] for t in terms)]
  backward = needs_backward(stage_cfg)
  awp = stage_cfg.get("awp", None)
  awp_gamma = float(awp.gamma) if awp is not None else 0.0

  def step(state, batch, rng, teacher_vars):
    params, stats = state["params"], state["stats"]
    x = batch["image"].astype(jnp.float32) / 255.0
    y = batch["label"]
    key = jax.random.fold_in(rng, state["step"])
    epoch = state["step"].astype(jnp.float32) / steps_per_epoch
    t_fn, t_logits = None, batch.get("teacher_logits")
    if teacher_apply is not None:
      t_fn = lambda xa, features=False: teacher_apply(*teacher_vars, xa, train=False,
                                                      features=features)[0]
      if t_logits is None:
        t_logits = jax.lax.stop_gradient(t_fn(x))
    atk = attack_fn(stage_cfg, apply, params, stats, teacher_logits=t_logits, teacher_fn=t_fn)
    extra_metrics = {}
    x_neg = x_bwd = neg_valid = None
    if backward or stage_cfg.attack.objective == "ce_confusing":
      train_bn = stage_cfg.attack.bn_mode == "train"
      confusing = most_confusing(apply(params, stats, x, train=train_bn)[0], y)
      x_adv = atk(x, y, key, target=confusing)
      if backward:
        k_neg, k_bwd = jax.random.split(jax.random.fold_in(key, 11))
        pool = batch.get("pool_image")
        pool = None if pool is None else pool.astype(jnp.float32) / 255.0
        x_neg, neg_valid = select_negatives(stage_cfg.loss.bml_negative, k_neg, confusing, x, y,
                                            pool)
        x_bwd = atk(x_neg, y, k_bwd, objective="ce_targeted", target=y)
        extra_metrics["neg_valid"] = jnp.mean(neg_valid)
    else:
      x_adv = atk(x, y, key)

    def loss_fn(p):
      ctx = Context(apply, p, stats, x, x_adv, y, t_logits, stage_cfg.loss, teacher_fn=t_fn,
                    epoch=epoch, key=key, x_neg=x_neg, x_bwd=x_bwd, neg_valid=neg_valid)
      for which in order:
        ctx.student(which)
      values = {k: jnp.mean(LOSS_TERMS[k](ctx)) for k in terms}
      total = sum(w * values[k] for k, w in terms.items())
      outs = {k: v for k, v in ctx._cache.items() if k in ("clean", "adv")}  # pylint: disable=protected-access
      return total, (values, ctx.stats, outs)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if awp_gamma > 0:
      g_proxy = jax.grad(lambda p: loss_fn(p)[0])(params)
      on = epoch >= awp.warmup_epochs
      v = awp_perturbation(params, g_proxy, gamma=awp_gamma, proxy_lr=awp.proxy_lr)
      v = jax.tree.map(lambda t: jnp.where(on, t, 0.0), v)
      (loss, (values, new_stats, outs)), grads = grad_fn(jax.tree.map(jnp.add, params, v))
      extra_metrics["awp_norm"] = optax.tree.norm(v)
    else:
      (loss, (values, new_stats, outs)), grads = grad_fn(params)
    updates, opt = tx.update(grads, state["opt"], params)
    params = optax.apply_updates(params, updates)
    metrics = {"loss": loss, **{f"loss/{k}": v for k, v in values.items()},
               "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params),
               **extra_metrics}
    for which, logits in outs.items():
      metrics[f"acc/{which}"] = jnp.mean(jnp.argmax(logits, -1) == y)
    new_state = {"params": params, "stats": new_stats, "opt": opt, "step": state["step"] + 1}
    return new_state, metrics

  return step


def init_state(model, tx):
  """Splits an NNX model into ``(graphdef, state)`` with a fresh optimizer state."""
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, {"params": params, "stats": stats, "opt": tx.init(params),
                    "step": jnp.zeros((), jnp.int32)}
