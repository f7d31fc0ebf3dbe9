"""Square Attack (Andriushchenko et al., ECCV 2020): a score-based black-box attack that needs only
a logits oracle, as a pure function of that oracle (no gradient is ever taken).

Follows fra31/auto-attack ``square.py`` with AutoAttack's settings (docs/evaluation.md
section 4): margin loss ``z_y - max_{j != y} z_j`` (minimised; success when it is <= 0), 5000
queries, ``p_init = 0.8`` and the un-rescaled ``p`` schedule (halving after 10, 50, 200, 500,
1000, 2000, 4000, 6000, 8000 queries), L-inf start with random vertical stripes of +-eps,
L2 start with a grid of the paper's nested-square bumps.

One deliberate difference, documented: the original draws one square position (and one sign per
channel) per iteration and shares it across the whole batch; here each image draws its own, which
is the algorithm of the paper, at least as strong, and makes every image's result independent of
the other images in its batch (so results do not depend on batching or on the device count). The
original's off-by-one (the last position, ``h - s``, is never drawn) is kept.

The query loop is a ``lax.while_loop`` that stops when every active image is broken; each turn
of it runs ``chunk`` queries unrolled (XLA:CPU runs long rolled loops slowly).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from robust_distill.attacks.threat import NORMS, per_example_norm
from robust_distill.losses import core


_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(it: int, p_init: float = 0.8) -> float:
  """The fraction of pixels in the square at query ``it`` (AutoAttack: no rescaling)."""
  k = sum(it > b for b in _BOUNDS)
  return p_init / (2**k)


def side_table(h: int, w: int, c: int, p_init: float, norm: str) -> np.ndarray:
  """Side length of the square for each of the 10 phases of the ``p`` schedule."""
  n_features = h * w * c
  out = []
  for k in range(len(_BOUNDS) + 1):
    p = p_init / (2**k)
    if norm == "linf":
      s = max(int(round(math.sqrt(p * n_features / c))), 1)
    else:
      s = max(int(round(math.sqrt(p * n_features / c))), 3)
      s += 1 - s % 2
    out.append(min(s, min(h, w)))
  return np.asarray(out, np.int32)


def _phase(i):
  i = jnp.asarray(i)
  return sum((i > b).astype(jnp.int32) for b in _BOUNDS)


def margin(logits, y):
  """``z_y - max_{j != y} z_j``."""
  zy = jnp.take_along_axis(logits, y[:, None], 1)[:, 0]
  return zy - core.largest_other_logit(logits, y)


def _eta_rectangles(x: int, y: int) -> np.ndarray:
  delta = np.zeros((x, y), np.float64)
  xc, yc = x // 2 + 1, y // 2 + 1
  c0, c1 = xc - 1, yc - 1
  for k in range(max(xc, yc)):
    rows, cols = (
      slice(max(c0, 0), min(c0 + 2 * k + 1, x)),
      slice(max(0, c1), min(c1 + 2 * k + 1, y)),
    )
    delta[rows, cols] += 1.0 / (k + 1) ** 2
    c0 -= 1
    c1 -= 1
  return delta / np.sqrt(np.sum(delta**2))


def eta(s: int) -> np.ndarray:
  """The L2 Square Attack's ``s x s`` update: two nested-square bumps of opposite sign, unit L2."""
  delta = np.zeros((s, s), np.float64)
  delta[: s // 2] = _eta_rectangles(s // 2, s)
  delta[s // 2 :] = -_eta_rectangles(s - s // 2, s)
  return delta / np.sqrt(np.sum(delta**2))


def _random_sign(key, shape, dtype):
  return jnp.sign(2.0 * jax.random.uniform(key, shape, dtype) - 1.0)


def _window(vh, vw, s, h, w):
  """Boolean ``[B, h, w, 1]`` masks of the ``s x s`` windows at rows ``vh``, columns ``vw``."""
  hh = jnp.arange(h)[None, :, None, None]
  ww = jnp.arange(w)[None, None, :, None]
  vh, vw = vh[:, None, None, None], vw[:, None, None, None]
  return (hh >= vh) & (hh < vh + s) & (ww >= vw) & (ww < vw + s)


def _place(patterns, vh, vw):
  """Shifts per-image ``[B, h, w]`` patterns (drawn at the top-left) to ``(vh, vw)``."""
  return jax.vmap(lambda p, a, b: jnp.roll(p, (a, b), axis=(0, 1)))(patterns, vh, vw)


def _l2_init(key, x, eps):
  bsz, h, w, c = x.shape
  s = h // 5
  sp = (h - s * 5) // 2
  pat = eta(s)
  delta = jnp.zeros_like(x)
  k_t, k_s = jax.random.split(key)
  nb_h, nb_w = h // s, w // s
  # Batch-leading draws: with JAX's partitionable threefry an example's draws then do not depend
  # on how many rows follow it, so padding a batch changes no real row's attack.
  flips = jnp.moveaxis(jax.random.uniform(k_t, (bsz, nb_h, nb_w)) > 0.5, 0, -1)
  signs = jnp.moveaxis(_random_sign(k_s, (bsz, nb_h, nb_w, 1, 1, c), x.dtype), 0, 2)
  base = jnp.asarray(pat, x.dtype)
  for i in range(nb_h):
    for j in range(nb_w):
      vh, vw = sp + i * s, sp + j * s
      hh, ww = min(vh + s, h) - vh, min(vw + s, w) - vw
      if hh <= 0 or ww <= 0:
        continue
      blk = jnp.where(flips[i, j][:, None, None], base.T, base)[:, :hh, :ww, None]
      delta = delta.at[:, vh : vh + hh, vw : vw + ww, :].add(blk * signs[i, j])
  return jnp.clip(x + delta / (per_example_norm(delta) + 1e-12) * eps, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Square:
  """Square Attack split into ``init`` / ``step`` (one query) / ``pending`` / ``result`` (see
  ``robust_distill.attacks.apgd.APGD`` for why). Fields: ``eps``, ``norm``, ``n_queries``
  (5000), ``p_init`` (0.8)."""

  eps: float
  norm: str = "linf"
  n_queries: int = 5000
  p_init: float = 0.8

  def __post_init__(self):
    if self.norm not in NORMS:
      raise ValueError(f"Unknown norm {self.norm!r}; valid: {list(NORMS)}")

  def init(self, logits_fn, x, y, rng, active=None) -> dict:
    """The stripes (L-inf) or grid (L2) start and its margin."""
    x = jax.lax.stop_gradient(x)
    bsz, _, w, c = x.shape
    clean_ok = jnp.argmax(logits_fn(x), -1) == y
    act0 = clean_ok if active is None else clean_ok & active
    k_init, k_loop = jax.random.split(rng)
    if self.norm == "linf":
      x_best = jnp.clip(x + self.eps * _random_sign(k_init, (bsz, 1, w, c), x.dtype), 0.0, 1.0)
    else:
      x_best = _l2_init(k_init, x, self.eps)
    m0 = margin(logits_fn(x_best), y)
    return dict(
      key=k_loop, act0=act0, x_best=x_best, m_min=m0, l_min=m0, queries=jnp.ones((bsz,), jnp.int32)
    )

  @staticmethod
  def pending(s: dict) -> jax.Array:
    """True while some active example is not yet broken."""
    return jnp.any(s["act0"] & (s["m_min"] > 0))

  def step(self, logits_fn, x, y, st: dict, i) -> dict:
    """Query ``i`` (0-based); a no-op for broken or inactive examples and for ``i >= n_queries``."""
    eps, norm = self.eps, self.norm
    bsz, h, w, c = x.shape
    bshape = (bsz, 1, 1, 1)
    xb, m_min, l_min = st["x_best"], st["m_min"], st["l_min"]
    todo = st["act0"] & (m_min > 0) & (i < self.n_queries)
    sides = jnp.asarray(side_table(h, w, c, self.p_init, norm))
    s = sides[_phase(i)]
    k1, k2, k3, k4, k5, k6 = jax.random.split(jax.random.fold_in(st["key"], i), 6)
    vh = jnp.floor((h - s) * jax.random.uniform(k1, (bsz,))).astype(jnp.int32)
    vw = jnp.floor((w - s) * jax.random.uniform(k2, (bsz,))).astype(jnp.int32)
    win = _window(vh, vw, s, h, w)
    if norm == "linf":
      sign = _random_sign(k3, (bsz, 1, 1, c), x.dtype)
      x_new = jnp.clip(jnp.clip(xb + win * (2.0 * eps) * sign, x - eps, x + eps), 0.0, 1.0)
    else:
      pats = np.zeros((len(_BOUNDS) + 1, h, w), np.float32)
      for k, side in enumerate(side_table(h, w, c, self.p_init, norm)):
        pats[k, :side, :side] = eta(int(side))
      pats = jnp.asarray(pats)
      vh2 = jnp.floor((h - s) * jax.random.uniform(k4, (bsz,))).astype(jnp.int32)
      vw2 = jnp.floor((w - s) * jax.random.uniform(k5, (bsz,))).astype(jnp.int32)
      win2 = _window(vh2, vw2, s, h, w)
      delta = xb - x
      n_w1 = jnp.sqrt(jnp.sum((delta * win) ** 2, axis=(1, 2), keepdims=True))
      n_img = per_example_norm(delta)
      n_wins = jnp.sqrt(jnp.sum((delta * (win | win2)) ** 2, axis=(1, 2), keepdims=True))
      pat = jnp.where(
        (jax.random.uniform(k6, (bsz,)) > 0.5)[:, None, None],
        jnp.swapaxes(pats[_phase(i)], 0, 1)[None],
        pats[_phase(i)][None],
      )
      pat = _place(jnp.broadcast_to(pat, (bsz, h, w)), vh, vw)[..., None]
      new = pat * _random_sign(k3, (bsz, 1, 1, c), x.dtype) + delta * win / (n_w1 + 1e-12)
      new = (
        new
        / (jnp.sqrt(jnp.sum(new**2, axis=(1, 2), keepdims=True)) + 1e-12)
        * jnp.sqrt(jnp.maximum(eps**2 - n_img**2, 0.0) / c + n_wins**2)
      )
      delta = jnp.where(win2, 0.0, delta)
      delta = jnp.where(win, new, delta)
      x_new = jnp.clip(x + delta / (per_example_norm(delta) + 1e-12) * eps, 0.0, 1.0)
    mg = margin(logits_fn(x_new), y)
    imp = mg < l_min
    upd = todo & (imp | (mg <= 0))
    return dict(
      key=st["key"],
      act0=st["act0"],
      x_best=jnp.where(upd.reshape(bshape), x_new, xb),
      m_min=jnp.where(upd, mg, m_min),
      l_min=jnp.where(todo & imp, mg, l_min),
      queries=st["queries"] + todo.astype(jnp.int32),
    )

  @staticmethod
  def result(logits_fn, x, y, st: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(x_adv, robust, queries)``; inactive or misclassified examples: not robust, ``x``."""
    act0 = st["act0"]
    robust = act0 & (jnp.argmax(logits_fn(st["x_best"]), -1) == y)
    x_adv = jnp.where((act0 & ~robust).reshape((x.shape[0], 1, 1, 1)), st["x_best"], x)
    return jax.lax.stop_gradient(x_adv), robust, st["queries"]


def square(logits_fn, x: jax.Array, y: jax.Array, **kwargs) -> tuple[jax.Array, jax.Array]:
  """The Square Attack, returning ``(x_adv, robust)`` like every attack; the keyword arguments
  (``eps``, ``norm``, ``n_queries``, ``p_init``, ``rng``, ``active``, ``chunk``) are
  ``square_run``'s, which also returns the query counts."""
  x_adv, robust, _ = square_run(logits_fn, x, y, **kwargs)
  return x_adv, robust


def square_run(
  logits_fn,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float,
  norm: str = "linf",
  n_queries: int = 5000,
  p_init: float = 0.8,
  rng: jax.Array,
  active=None,
  chunk: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Square Attack on the margin loss, untargeted, one restart, with its query counts.

  Args:
    logits_fn: images (NHWC, in [0, 1]) -> logits. Only evaluated, never differentiated.
    x, y: clean images and labels. eps, norm: the threat model ('linf' or 'l2').
    n_queries: iterations after the initial query (5000 in AutoAttack).
    rng: PRNG key. active: bool ``[B]``; inactive examples are neither counted nor awaited.
    chunk: queries per ``while_loop`` turn (0: 10 on CPU, 1 on accelerators).

  Returns:
    ``(x_adv, robust, queries)``: ``robust`` is "still classified correctly at the returned
    point"; inactive or misclassified examples come back as not robust with ``x_adv = x``.
  """
  sq = Square(eps=eps, norm=norm, n_queries=n_queries, p_init=p_init)
  x = jax.lax.stop_gradient(x)
  if chunk <= 0:
    chunk = 10 if jax.default_backend() == "cpu" else 1

  def cond(c):
    i, st = c
    return (i < n_queries) & Square.pending(st)

  def body(c):
    i, st = c
    for k in range(chunk):
      st = sq.step(logits_fn, x, y, st, i + k)
    return i + chunk, st

  _, st = jax.lax.while_loop(cond, body, (jnp.int32(0), sq.init(logits_fn, x, y, rng, active)))
  return Square.result(logits_fn, x, y, st)
