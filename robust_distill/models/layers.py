"""Layers shared by the models."""

import jax
import jax.numpy as jnp


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 stride-2 max-pooling of an NHWC array written as reshape + max.

  Same values as ``nnx.max_pool(x, (2, 2), (2, 2))`` and the same gradients almost everywhere
  (ties aside), but XLA:CPU differentiates it far faster than ``reduce_window``, whose
  ``select_and_scatter`` gradient dominates an adversarial training step on CPU
  (docs/performance.md: 605 ms vs 326 ms per PGD-10 step).
  Odd spatial sizes are cropped, as VALID pooling does.
  """
  n, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2, :]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def normalize(x: jax.Array, mean, std) -> jax.Array:
  """(x - mean) / std with per-channel constants; inputs are images in [0, 1]."""
  mean = jnp.asarray(mean, x.dtype)
  std = jnp.asarray(std, x.dtype)
  return (x - mean) / std
