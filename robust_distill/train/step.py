"""The jitted adversarial training step, built from a stage config.

One step: (1) teacher logits (precomputed in the batch, or an online teacher forward);
(2) the attack (``robust_distill.attacks.pgd`` on the model with an explicit BatchNorm mode);
(3) the loss, a config-weighted sum of per-example terms from ``LOSS_TERMS``; a term whose weight
is 0 is never traced, so it costs nothing; (4) an optax update. The step is a pure function
``(state, batch, rng, teacher_vars) -> (state, metrics)`` meant for ``jax.jit`` with the state
donated and the batch sharded over the mesh's ``data`` axis.

The model's output is ``logits / temperature`` where ``temperature`` is the stage's fixed output
temperature (LTD's student temperature ``tau_S``); the same function is attacked, trained and
evaluated.
"""

import dataclasses
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from robust_distill import attacks
from robust_distill.losses import core

# Objectives the training attack can maximise (config: attack.objective).
ATTACK_OBJECTIVES = {
    "ce": "CE(S(x'), y): PGD-AT (Madry et al. 2018)",
    "kl_self": "KL(p(S(x)) || p(S(x'))): TRADES / LTD",
    "kl_teacher": "KL(p(T(x)) || p(S(x'))): RSLAD",
    "kl_models": "KL(p(T(x')) || p(S(x'))): AdaAD / DGAD (needs an online teacher)",
    "cw": "max_{j!=y} S(x')_j - S(x')_y",
}
BN_MODES = ("eval", "train")


@dataclasses.dataclass
class Context:
  """Lazily computed forwards shared by the loss terms of one step (traced once each)."""
  apply: Callable
  params: Any
  stats: Any
  x: jax.Array
  x_adv: jax.Array
  y: jax.Array
  teacher_logits: Any
  cfg: Any
  _cache: dict = dataclasses.field(default_factory=dict)

  def student(self, which: str):
    """Student logits on ``which`` in {'clean', 'adv'} in train mode; BN stats chain along."""
    if which not in self._cache:
      out, self.stats = self.apply(self.params, self.stats, self.x if which == "clean"
                                   else self.x_adv, train=True)
      self._cache[which] = out
    return self._cache[which]

  def teacher(self):
    if self.teacher_logits is None:
      raise ValueError("this loss term needs teacher logits, but the stage has no teacher")
    return self.teacher_logits


def _kd(ctx, which):
  c = ctx.cfg
  return core.soft_label_kd(ctx.teacher(), ctx.student(which),
                            teacher_temperature=c.kd_teacher_temperature,
                            temperature_scale=c.kd_scale)


# Loss vocabulary: name -> per-example function of the step context (config: loss.<name> = w).
LOSS_TERMS: dict[str, Callable[[Context], jax.Array]] = {
    "ce_clean": lambda ctx: core.cross_entropy(ctx.student("clean"), ctx.y,
                                               label_smoothing=ctx.cfg.label_smoothing),
    "ce_adv": lambda ctx: core.cross_entropy(ctx.student("adv"), ctx.y,
                                             label_smoothing=ctx.cfg.label_smoothing),
    "trades_kl": lambda ctx: core.trades_kl(ctx.student("clean"), ctx.student("adv")),
    "kd_clean": lambda ctx: _kd(ctx, "clean"),
    "kd_adv": lambda ctx: _kd(ctx, "adv"),
}
# Terms that read the student's clean / adversarial outputs (fixes the BN forward order).
_NEEDS = {"ce_clean": ("clean",), "ce_adv": ("adv",), "trades_kl": ("clean", "adv"),
          "kd_clean": ("clean",), "kd_adv": ("adv",)}
TEACHER_TERMS = ("kd_clean", "kd_adv")
LOSS_OPTIONS = ("kd_teacher_temperature", "kd_scale", "label_smoothing")


def active_terms(loss_cfg) -> dict[str, float]:
  """The (name, weight) pairs with a non-zero weight, in vocabulary order."""
  return {k: float(loss_cfg[k]) for k in LOSS_TERMS if float(loss_cfg.get(k, 0.0)) != 0.0}


def needs_teacher(stage_cfg) -> bool:
  return (any(t in active_terms(stage_cfg.loss) for t in TEACHER_TERMS)
          or stage_cfg.attack.objective in ("kl_teacher", "kl_models"))


def make_apply(graphdef, temperature: float = 1.0):
  """``apply(params, stats, x, train) -> (logits / temperature, new_stats)``, x in [0, 1]."""

  def apply(params, stats, x, *, train: bool):
    m = nnx.merge(graphdef, params, stats, copy=True)
    if train:
      m.train()
    else:
      m.eval()
    out = m(x)
    return out / temperature, nnx.state(m, nnx.BatchStat)

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


def attack_fn(stage_cfg, apply, params, stats, *, teacher_logits=None, teacher_fn=None):
  """``x, y, rng -> x_adv`` for the stage's training attack (pure, jit-friendly)."""
  a = stage_cfg.attack
  train_bn = a.bn_mode == "train"

  def student(xa):
    return apply(params, stats, xa, train=train_bn)[0]

  def run(x, y, rng):
    obj, fn, target = "ce", student, y
    if a.objective == "kl_self":
      obj, target = "kl", jax.nn.softmax(apply(params, stats, x, train=train_bn)[0])
    elif a.objective == "kl_teacher":
      obj, target = "kl", jax.nn.softmax(teacher_logits)
    elif a.objective == "kl_models":
      if teacher_fn is None:
        raise ValueError("attack.objective='kl_models' needs teacher.source='online'")
      obj, fn, target = "kl_models", lambda xa: (student(xa), teacher_fn(xa)), None
    elif a.objective == "cw":
      obj = "cw"
    return attacks.pgd(fn, x, target, eps=a.eps, step_size=a.step_size, steps=a.steps,
                       objective=obj, norm=a.norm, init=a.init, rng=rng,
                       unroll=a.unroll if a.unroll > 0 else None)

  return run


def make_train_step(stage_cfg, graphdef, tx, *, teacher_graphdef=None):
  """Builds ``step(state, batch, rng, teacher_vars) -> (state, metrics)`` (not yet jitted).

  ``state`` = ``{"params", "stats", "opt", "step"}``; ``batch`` = ``{"image": uint8 NHWC,
  "label", optional "teacher_logits"}``; ``teacher_vars`` = ``(params, stats)`` of an online
  teacher or ``None``.
  """
  apply = make_apply(graphdef, stage_cfg.temperature)
  teacher_apply = make_apply(teacher_graphdef) if teacher_graphdef is not None else None
  terms = active_terms(stage_cfg.loss)
  if not terms:
    raise ValueError("the stage's loss has no term with a non-zero weight")
  order = [w for w in ("clean", "adv") if any(w in _NEEDS[t] for t in terms)]

  def step(state, batch, rng, teacher_vars):
    params, stats = state["params"], state["stats"]
    x = batch["image"].astype(jnp.float32) / 255.0
    y = batch["label"]
    key = jax.random.fold_in(rng, state["step"])
    t_fn, t_logits = None, batch.get("teacher_logits")
    if teacher_apply is not None:
      t_fn = lambda xa: teacher_apply(*teacher_vars, xa, train=False)[0]
      if t_logits is None:
        t_logits = jax.lax.stop_gradient(t_fn(x))
    x_adv = attack_fn(stage_cfg, apply, params, stats, teacher_logits=t_logits,
                      teacher_fn=t_fn)(x, y, key)

    def loss_fn(p):
      ctx = Context(apply, p, stats, x, x_adv, y, t_logits, stage_cfg.loss)
      for which in order:
        ctx.student(which)
      values = {k: jnp.mean(LOSS_TERMS[k](ctx)) for k in terms}
      total = sum(w * values[k] for k, w in terms.items())
      return total, (values, ctx.stats, ctx._cache)  # pylint: disable=protected-access

    (loss, (values, new_stats, outs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, state["opt"], params)
    params = optax.apply_updates(params, updates)
    metrics = {"loss": loss, **{f"loss/{k}": v for k, v in values.items()},
               "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
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
