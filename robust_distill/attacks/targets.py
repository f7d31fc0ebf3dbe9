"""AutoAttack's targeted attacks' loop over target classes, shared by APGD-T and FAB-T."""

import jax
import jax.numpy as jnp


def target_classes(clean_logits: jax.Array, n_target_classes: int) -> jax.Array:
  """``[n_target_classes, B]`` targets: the 2nd, 3rd, ... largest clean logit of each example
  (AutoAttack's ``argsort(logits)[:, -k]``, k = 2 .. n_target_classes + 1)."""
  order = jnp.argsort(clean_logits, axis=-1)
  return jnp.stack([order[:, -k] for k in range(2, n_target_classes + 2)])


def over_targets(run_one, clean_logits, x, y, n_target_classes: int, active=None):
  """AutoAttack's loop over target classes as a ``lax.while_loop``: ``run_one(t, y_target) ->
  (x_adv, robust)`` is called for the t-th runner-up class while some example is still robust;
  a point broken by target t keeps that target's adversarial image. Returns ``(x_adv, robust)``
  (inactive or misclassified examples: not robust, ``x_adv = x``)."""
  targets = target_classes(clean_logits, n_target_classes)
  robust0 = jnp.argmax(clean_logits, -1) == y
  if active is not None:
    robust0 = robust0 & active
  bshape = (x.shape[0],) + (1,) * (x.ndim - 1)

  def cond(c):
    t, robust, _ = c
    return (t < n_target_classes) & jnp.any(robust)

  def body(c):
    t, robust, x_adv = c
    xa, r = run_one(t, targets[t])
    newly = robust & ~r
    return t + 1, robust & r, jnp.where(newly.reshape(bshape), xa, x_adv)

  _, robust, x_adv = jax.lax.while_loop(cond, body, (jnp.int32(0), robust0, x))
  return x_adv, robust
