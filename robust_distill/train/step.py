"""The jitted adversarial training step, built from a stage config.

One step: (1) teacher logits (precomputed in the batch, or an online teacher forward);
(2) the training attack (``train.attack``) and, when a term needs them, AGKD-BML's negatives and
their backward adversarial examples; (3) the explicit forwards the active loss terms read
(``losses.terms`` declares them): the student's, in train mode, with the BatchNorm statistics
passed from one forward to the next as values, and the online teacher's; (4) the loss,
``losses.terms.total_loss``; (5) an optax update, with AWP's weight perturbation when
configured. The step is a pure function ``(state, batch, rng, teacher_vars) -> (state,
metrics)`` meant for ``jax.jit`` with the state donated and the batch sharded over the mesh.

The model's output is ``logits / temperature`` (the stage's fixed output temperature, LTD's
``tau_S``); the same function is attacked, trained and evaluated.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from robust_distill.losses import core, extra, terms
from robust_distill.models import make_apply
from robust_distill.train.attack import attack_fn


def student_forwards(apply, params, stats, inputs: dict, order):
  """Train-mode forwards of the student on ``inputs[w]`` for ``w`` in ``order``; the BatchNorm
  statistics of each forward feed the next. Returns ``(logits, features, new_stats)``."""
  logits, feats = {}, {}
  for w in order:
    (logits[w], feats[w]), stats = apply(params, stats, inputs[w], train=True, features=True)
  return logits, feats, stats


def teacher_forwards(teacher_fn, inputs: dict, which) -> dict:
  """Online teacher ``(logits, features)`` (constants) on ``inputs[w]`` for ``w`` in ``which``."""
  if which and teacher_fn is None:
    raise ValueError(
      "this loss runs the teacher inside the step (on adversarial inputs or for "
      "its features): set teacher.source='online'"
    )
  return {w: jax.lax.stop_gradient(teacher_fn(inputs[w], features=True)) for w in which}


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


def make_train_step(stage_cfg, graphdef, tx, *, teacher_graphdef=None, steps_per_epoch: int = 1,
                    teacher_temperature: float = 1.0):  # fmt: skip
  """Builds ``step(state, batch, rng, teacher_vars) -> (state, metrics)`` (not yet jitted).

  ``state`` = ``{"params", "stats", "opt", "step"}``; ``batch`` = ``{"image": uint8 NHWC,
  "label", optional "teacher_logits", "pool_image"}``; ``teacher_vars`` = ``(params, stats)``
  of an online teacher or ``None``. The teacher is the function it was trained as: its
  logits divided by ``teacher_temperature`` (its stage's fixed output temperature), as the
  precompute stores them. With ``stage_cfg.awp.gamma > 0`` the gradient is taken at
  the AWP-perturbed weights (from epoch ``awp.warmup_epochs`` on) and applied to the
  unperturbed weights.
  """
  apply = make_apply(graphdef, stage_cfg.temperature)
  teacher_apply = (
    make_apply(teacher_graphdef, teacher_temperature) if teacher_graphdef is not None else None
  )
  loss_cfg = stage_cfg.loss
  if not terms.active_terms(loss_cfg):
    raise ValueError("the stage's loss has no term with a non-zero weight")
  order = terms.student_inputs(loss_cfg)
  online = sorted(set(terms.teacher_inputs(loss_cfg)) | set(terms.teacher_feature_inputs(loss_cfg)))
  backward = terms.needs_backward(loss_cfg)
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

      def t_fn(xa, features=False):
        return teacher_apply(*teacher_vars, xa, train=False, features=features)[0]

      if t_logits is None:
        t_logits = jax.lax.stop_gradient(t_fn(x))
    atk = attack_fn(stage_cfg, apply, params, stats, teacher_logits=t_logits, teacher_fn=t_fn)
    extra_metrics = {}
    inputs = {"clean": x}
    neg_valid = None
    if backward or stage_cfg.attack.objective == "ce_confusing":
      train_bn = stage_cfg.attack.bn_mode == "train"
      confusing = core.most_confusing_class(apply(params, stats, x, train=train_bn)[0], y)
      inputs["adv"] = atk(x, y, key, target=confusing)
      if backward:
        k_neg, k_bwd = jax.random.split(jax.random.fold_in(key, 11))
        pool = batch.get("pool_image")
        pool = None if pool is None else pool.astype(jnp.float32) / 255.0
        inputs["neg"], neg_valid = extra.select_negatives(
          loss_cfg.bml_negative, k_neg, confusing, x, y, pool
        )
        inputs["bwd"] = atk(inputs["neg"], y, k_bwd, objective="ce_targeted", target=y)
        extra_metrics["neg_valid"] = jnp.mean(neg_valid)
    else:
      inputs["adv"] = atk(x, y, key)
    t_out = teacher_forwards(t_fn, inputs, online)
    teacher = {w: logits for w, (logits, _) in t_out.items()}
    if t_logits is not None:
      teacher["clean"] = t_logits
    teacher_feats = {w: feats for w, (_, feats) in t_out.items()}

    def loss_fn(p):
      logits, feats, new_stats = student_forwards(apply, p, stats, inputs, order)
      fw = terms.Forwards(
        labels=y,
        student=logits,
        teacher=teacher,
        student_features=feats,
        teacher_features=teacher_feats,
        epoch=epoch,
        key=key,
        neg_valid=neg_valid,
      )
      total, values = terms.total_loss(loss_cfg, fw)
      outs = {w: z for w, z in logits.items() if w in ("clean", "adv")}
      return total, (values, new_stats, outs)

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
    metrics = {
      "loss": loss,
      **{f"loss/{k}": v for k, v in values.items()},
      "grad_norm": optax.tree.norm(grads),
      "param_norm": optax.tree.norm(params),
      **extra_metrics,
    }
    for which, logits in outs.items():
      metrics[f"acc/{which}"] = jnp.mean(jnp.argmax(logits, -1) == y)
    new_state = {"params": params, "stats": new_stats, "opt": opt, "step": state["step"] + 1}
    return new_state, metrics

  return step


def init_state(model, tx):
  """Splits an NNX model into ``(graphdef, state)`` with a fresh optimizer state."""
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, {
    "params": params,
    "stats": stats,
    "opt": tx.init(params),
    "step": jnp.zeros((), jnp.int32),
  }


def init_from(state, source: str, teacher, tx):
  """The fresh ``state`` with the parameters and BN statistics of ``source`` ('teacher': the
  online teacher, same architecture), e.g. AGKD-BML's student initialised from its clean
  teacher; a fresh optimizer state."""
  if source != "teacher" or teacher is None or "graphdef" not in teacher:
    raise ValueError(f"init_from={source!r} needs an online teacher (teacher.source='online')")
  mine = jax.tree.map(lambda a: (a.shape, a.dtype), (state["params"], state["stats"]))
  theirs = jax.tree.map(lambda a: (a.shape, a.dtype), (teacher["params"], teacher["stats"]))
  if jax.tree.structure(mine) != jax.tree.structure(theirs) or mine != theirs:
    raise ValueError(
      "init_from='teacher': the student and the teacher have different "
      "architectures; give them the same model and model_kwargs"
    )
  params, stats = jax.device_get((teacher["params"], teacher["stats"]))
  return {**state, "params": params, "stats": stats, "opt": tx.init(params)}


def make_finite_check(apply):
  """``check(params, stats, images) -> bool``: every parameter is finite and the eval-mode
  logits on ``images`` (uint8) are finite. The loop runs it before every save, so that no
  checkpoint holds a state that already diverged (a finite loss before an update says nothing
  about the parameters after it)."""

  @jax.jit
  def check(params, stats, images):
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
    logits = apply(params, stats, images.astype(jnp.float32) / 255.0, train=False)[0]
    return ok & jnp.all(jnp.isfinite(logits))

  return check
