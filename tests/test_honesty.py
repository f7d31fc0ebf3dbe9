"""Honesty checks that can be told apart on hand-made logit functions."""

import jax.numpy as jnp

from robust_distill.eval import honesty


def test_gradient_check_counts_only_correctly_classified_points():
  z = jnp.array([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
  x = jnp.ones((2, 4))
  y = jnp.array([2, 0])  # point 0: the true class ranks third (DLR = 1, flat); point 1: correct
  r = honesty.gradients(lambda v: z + 0.1 * v, x, y)
  assert r["ok"], r
  assert r["value"]["dlr"]["zero"] == 0 and "of 1" in r["detail"]
  # A function that ignores its input has zero gradients at the correct point: a red flag.
  flat = honesty.gradients(lambda v: z + 0.0 * v, x, y)
  assert not flat["ok"] and flat["value"]["ce"]["zero"] == 1
