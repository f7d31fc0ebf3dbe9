"""Auto-PGD (Croce & Hein, ICML 2020, arXiv:2003.01690) as a pure function of a logits function.

Follows the original AutoAttack code (fra31/auto-attack ``autopgd_base.py``):

* start on the surface of the ball (L-inf: ``x + eps * t / max|t|``, ``t ~ U[-1, 1)``; L2: a
  Gaussian direction scaled to norm ``eps``), clipped to [0, 1];
* step size ``2 eps`` per example, momentum 0.75 (none at the first step);
* checkpoints after iterations 22, 41, 57, 70, 80, 87, 93, 99 (for 100 iterations: interval
  ``0.22 n``, shrinking by ``0.03 n`` down to ``0.06 n``); at a checkpoint the step is halved and
  the iterate restarts from the best point (and its gradient) when (1) the loss increased in at
  most 75% of the steps since the previous checkpoint, or (2) the step was not halved at the
  previous checkpoint and the best loss has not improved since. The original's quirk at the
  first checkpoint (comparing the first loss with an unset, zero entry) is reproduced.
* the point returned for a broken example is the last misclassified iterate; ``robust`` is the
  minimum over all iterates (including the start) of "classified correctly".

Every example runs the same fixed-shape program: examples that are already broken keep
iterating, and the caller masks them (``robust`` is an AND over iterates). The loops are
``lax.fori_loop`` (iterations, unrolled on CPU by default) and ``lax.while_loop`` (targets of
APGD-T, stopping early once no example in the batch is robust).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from robust_distill.attacks.objectives import OBJECTIVES
from robust_distill.attacks.targets import over_targets
from robust_distill.attacks.threat import check_names, per_example_norm, project_box, surface_init

LOSSES = ("ce", "dlr", "dlr_targeted")


def checkpoint_schedule(n_iter: int) -> tuple[np.ndarray, np.ndarray]:
  """(is_checkpoint[n_iter], k[n_iter]): iterations after which the step-size rule is checked,
  and the length of the interval that ends there (22, 19, 16, 13, 10, 7, 6, 6 for 100)."""
  n2 = max(int(0.22 * n_iter), 1)
  n_min = max(int(0.06 * n_iter), 1)
  decr = max(int(0.03 * n_iter), 1)
  is_ck = np.zeros(n_iter, bool)
  ks = np.zeros(n_iter, np.int32)
  k, counter = n2, 0
  for i in range(n_iter):
    counter += 1
    if counter == k:
      is_ck[i], ks[i] = True, k
      k, counter = max(k - decr, n_min), 0
  return is_ck, ks


def _norm(v):
  return per_example_norm(v)


def _project(v, x, eps, norm):
  return project_box(v, x, eps=eps, norm=norm)


def _loss_fn(loss: str) -> Callable:
  """``fn(logits, labels, target_labels)`` from the shared objectives."""
  if loss not in LOSSES:
    raise ValueError(f"Unknown APGD loss {loss!r}; valid: {list(LOSSES)}")
  obj = OBJECTIVES[loss]
  if loss == "dlr_targeted":
    return lambda z, y, t: obj(z, (y, t))
  return lambda z, y, t: obj(z, y)


@dataclasses.dataclass(frozen=True)
class APGD:
  """One APGD run split into ``init`` / ``step`` / ``result`` (pure functions of a logits function
  and a state dict), so that the iterations can run inside one ``lax.fori_loop`` (``apgd``) or be
  driven in compiled chunks from the host (``robust_distill.attacks.autoattack.HostRunner``: on
  XLA:CPU any ``while`` loop runs its body several times slower than straight-line code).

  Fields: ``eps``, ``norm`` ('linf' | 'l2'), ``loss`` ('ce' | 'dlr' | 'dlr_targeted'),
  ``n_iter`` (100), ``rho`` (0.75), ``eot_iter`` (1; > 1 averages the gradient over that many
  calls ``logits_fn(x, key)``).
  """

  eps: float
  norm: str = "linf"
  loss: str = "ce"
  n_iter: int = 100
  rho: float = 0.75
  eot_iter: int = 1

  def __post_init__(self):
    check_names(norm=self.norm)
    _loss_fn(self.loss)

  def _loss_grad(self, logits_fn, xa, y, y_t, key):
    lf = _loss_fn(self.loss)

    def total(v, k):
      z = logits_fn(v, k) if self.eot_iter > 1 else logits_fn(v)
      li = lf(z, y, y_t)
      return jnp.sum(li), (li, z)

    vg = jax.value_and_grad(total, has_aux=True)
    if self.eot_iter <= 1:
      (_, (li, z)), g = vg(xa, key)
      return li, z, g
    keys = jax.random.split(key, self.eot_iter)
    g_sum, li_sum, z = jnp.zeros_like(xa), jnp.zeros(xa.shape[:1], xa.dtype), None
    for k in range(self.eot_iter):  # small, static count: unrolled
      (_, (li, z)), g = vg(xa, keys[k])
      g_sum, li_sum = g_sum + g, li_sum + li
    return li_sum / self.eot_iter, z, g_sum / self.eot_iter

  def init(self, logits_fn, x, y, rng, y_target=None) -> dict:
    """Random start on the ball's surface, its loss, gradient and correctness."""
    if self.loss == "dlr_targeted" and y_target is None:
      raise ValueError("loss='dlr_targeted' needs y_target")
    x = jax.lax.stop_gradient(x)
    y_t = y if y_target is None else y_target
    key, init_key = jax.random.split(rng)
    bshape = (x.shape[0],) + (1,) * (x.ndim - 1)
    x_adv = surface_init(init_key, x, eps=self.eps, norm=self.norm)
    loss0, z0, grad0 = self._loss_grad(
      logits_fn, x_adv, y, y_t, jax.random.fold_in(key, self.n_iter)
    )
    acc0 = jnp.argmax(z0, -1) == y
    return dict(
      y_t=y_t,
      key=key,
      x_adv=x_adv,
      x_old=x_adv,
      grad=grad0,
      step=jnp.full(bshape, 2.0 * self.eps, x.dtype),
      x_best=x_adv,
      grad_best=grad0,
      loss_best=loss0,
      x_best_adv=x_adv,
      acc=acc0,
      prev_loss=jnp.zeros_like(loss0),
      n_incr=jnp.zeros_like(loss0),
      loss_best_last=loss0,
      reduced_last=jnp.ones_like(acc0),
    )

  def step(self, logits_fn, x, y, s: dict, i) -> dict:
    """Iteration ``i`` (0-based; traced or static) of the main loop."""
    eps, norm = self.eps, self.norm
    is_ck_np, ks_np = checkpoint_schedule(self.n_iter)
    is_ck, ks = jnp.asarray(is_ck_np), jnp.asarray(ks_np, jnp.float32)
    bshape = (x.shape[0],) + (1,) * (x.ndim - 1)
    grad2 = s["x_adv"] - s["x_old"]
    a = jnp.where(i > 0, 0.75, 1.0).astype(x.dtype)
    xa = s["x_adv"]
    if norm == "linf":
      z = _project(xa + s["step"] * jnp.sign(s["grad"]), x, eps, norm)
    else:
      z = _project(xa + s["step"] * s["grad"] / (_norm(s["grad"]) + 1e-12), x, eps, norm)
    x_new = _project(xa + a * (z - xa) + (1.0 - a) * grad2, x, eps, norm)
    li, logits, g = self._loss_grad(logits_fn, x_new, y, s["y_t"], jax.random.fold_in(s["key"], i))
    pred = jnp.argmax(logits, -1) == y
    acc = s["acc"] & pred
    x_best_adv = jnp.where(pred.reshape(bshape), s["x_best_adv"], x_new)
    n_incr = s["n_incr"] + (li > s["prev_loss"]).astype(li.dtype)
    imp = li > s["loss_best"]
    x_best = jnp.where(imp.reshape(bshape), x_new, s["x_best"])
    grad_best = jnp.where(imp.reshape(bshape), g, s["grad_best"])
    loss_best = jnp.where(imp, li, s["loss_best"])
    # Checkpoint (a no-op at other iterations).
    ck = is_ck[i]
    cond1 = n_incr <= ks[i] * self.rho
    cond2 = (~s["reduced_last"]) & (s["loss_best_last"] >= loss_best)
    flag = ck & (cond1 | cond2)
    fb = flag.reshape(bshape)
    return dict(
      y_t=s["y_t"],
      key=s["key"],
      x_adv=jnp.where(fb, x_best, x_new),
      x_old=x_new,
      grad=jnp.where(fb, grad_best, g),
      step=jnp.where(fb, s["step"] / 2.0, s["step"]),
      x_best=x_best,
      grad_best=grad_best,
      loss_best=loss_best,
      x_best_adv=x_best_adv,
      acc=acc,
      prev_loss=li,
      n_incr=jnp.where(ck, 0.0, n_incr),
      loss_best_last=jnp.where(ck, loss_best, s["loss_best_last"]),
      reduced_last=jnp.where(ck, cond1 | cond2, s["reduced_last"]),
    )

  @staticmethod
  def result(x, s: dict) -> tuple[jax.Array, jax.Array]:
    """``(x_adv, robust)``: the last misclassified iterate where one exists, else ``x``."""
    bshape = (x.shape[0],) + (1,) * (x.ndim - 1)
    x_out = jnp.where(s["acc"].reshape(bshape), x, s["x_best_adv"])
    return jax.lax.stop_gradient(x_out), s["acc"]


def apgd(
  logits_fn: Callable[[jax.Array], jax.Array],
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float,
  norm: str = "linf",
  loss: str = "ce",
  y_target: jax.Array | None = None,
  n_iter: int = 100,
  rho: float = 0.75,
  rng: jax.Array,
  eot_iter: int = 1,
  unroll: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """One APGD run (one restart) on every example of the batch.

  Args:
    logits_fn: images in [0, 1] -> logits; for ``eot_iter > 1`` it is called as
      ``logits_fn(x, key)`` and the gradient is averaged over ``eot_iter`` keys (expectation
      over transformation, AutoAttack's ``rand`` version).
    x: clean images ``[B, ...]`` in [0, 1]. y: labels ``[B]``.
    eps: radius of the ``norm`` ball ('linf' or 'l2').
    loss: 'ce', 'dlr' or 'dlr_targeted' (needs ``y_target``); the attack maximises it.
    n_iter: iterations (100 in AutoAttack). rho: the oscillation threshold (0.75).
    rng: key for the random start. unroll: ``fori_loop`` unroll (None: 1; fully unrolling 100
      iterations takes minutes to compile; on CPU, ``autoattack.HostRunner`` is the fast path).

  Returns:
    ``(x_adv, robust)``: ``robust[i]`` is False when some iterate (or the start) was
    misclassified, and ``x_adv[i]`` is then the last misclassified iterate; otherwise
    ``x_adv[i] = x[i]``.
  """
  a = APGD(eps=eps, norm=norm, loss=loss, n_iter=n_iter, rho=rho, eot_iter=eot_iter)
  x = jax.lax.stop_gradient(x)
  s = a.init(logits_fn, x, y, rng, y_target)
  unroll = 1 if unroll is None or unroll < 1 else int(unroll)
  s = jax.lax.fori_loop(0, n_iter, lambda i, st: a.step(logits_fn, x, y, st, i), s, unroll=unroll)
  return APGD.result(x, s)


def apgd_targeted(
  logits_fn,
  x,
  y,
  *,
  eps: float,
  norm: str = "linf",
  n_target_classes: int = 9,
  n_iter: int = 100,
  rho: float = 0.75,
  rng: jax.Array,
  active=None,
  unroll: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """APGD-T: APGD on the targeted DLR loss towards each of the top ``n_target_classes``
  runner-up classes in turn, each from a fresh random start (one restart per target).

  ``active`` (bool ``[B]``, default all) marks the examples that still count; the loop over
  targets stops as soon as none of them is robust. Returns ``(x_adv, robust)``; inactive or
  misclassified examples come back as not robust, with ``x_adv = x``.
  """
  clean = logits_fn(x)
  num_classes = clean.shape[-1]
  if num_classes < 4 or n_target_classes + 1 > num_classes:
    raise ValueError(
      f"APGD-T needs >= 4 classes and n_target_classes + 1 <= classes; got "
      f"{num_classes} classes, n_target_classes={n_target_classes}"
    )

  def one(t, y_t):
    return apgd(
      logits_fn,
      x,
      y,
      eps=eps,
      norm=norm,
      loss="dlr_targeted",
      y_target=y_t,
      n_iter=n_iter,
      rho=rho,
      rng=jax.random.fold_in(rng, t),
      unroll=unroll,
    )

  x_adv, robust = over_targets(one, clean, x, y, n_target_classes, active)
  return jax.lax.stop_gradient(x_adv), robust
