"""Layers and switches shared by the models: pooling, input normalisation, the computation
dtype (``dtype``) and block rematerialisation (``remat``)."""

from flax import nnx
import jax
import jax.numpy as jnp

# model_kwargs.dtype: the dtype convolutions, dense layers and BatchNorm compute in. Parameters,
# optimizer state, BatchNorm statistics, logits (hence losses and attack objectives) stay float32.
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
# model_kwargs.remat: jax.checkpoint around each residual block, with a named policy:
# 'none' (store every activation), 'nothing' (store only each block's input; recompute the
# rest in the backward pass), 'dots' (also store the convolutions' outputs; recompute
# BatchNorm and ReLU).
REMAT_POLICIES = {
  "none": None,
  "nothing": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.dots_saveable,
}


def _pool_forward(x: jax.Array) -> jax.Array:
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@jax.custom_vjp
def _pool_even(x: jax.Array) -> jax.Array:
  return _pool_forward(x)


def _pool_even_fwd(x):
  y = _pool_forward(x)
  return y, (x, y)


def _pool_even_bwd(res, g):
  # The whole gradient goes to the first input (row-major) equal to its window's maximum, as
  # in reduce_window's select_and_scatter and PyTorch. Ties are common: a constant background
  # gives four equal non-zero activations per window.
  x, y = res
  n, h, w, c = x.shape
  xr = x.reshape(n, h // 2, 2, w // 2, 2, c)
  first = xr[:, :, 0, :, 0] == y
  second = (xr[:, :, 0, :, 1] == y) & ~first
  third = (xr[:, :, 1, :, 0] == y) & ~(first | second)
  fourth = ~(first | second | third)
  put = lambda m: jnp.where(m, g, 0)
  top = jnp.stack([put(first), put(second)], axis=3)
  bottom = jnp.stack([put(third), put(fourth)], axis=3)
  return (jnp.stack([top, bottom], axis=2).reshape(x.shape),)


_pool_even.defvjp(_pool_even_fwd, _pool_even_bwd)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 stride-2 max-pooling of an NHWC array.

  Same values and gradients as ``nnx.max_pool(x, (2, 2), (2, 2))``: each output's gradient
  goes to the first input of its window (row-major) that equals the window's maximum, as
  ``reduce_window``'s ``select_and_scatter`` and PyTorch's ``max_pool2d`` route it. Ties are
  common (a constant image background gives four equal activations in a window), so the rule
  matters: sending the full gradient to every tied input multiplies the background's gradient
  by four and made a TRADES teacher diverge.

  Why not the library functions: on XLA:CPU, ``reduce_window``'s ``select_and_scatter``
  gradient made a PGD-10 training step about twice as slow, and ``jnp.max`` over a reshaped
  window (the forward used here) differentiates through a tie count and a division that cost
  about 5% of the step; it also splits a tie's gradient evenly (``bench/max_pool.py`` times
  the three). Odd spatial sizes are cropped, as VALID pooling does.
  """
  _, h, w, _ = x.shape
  return _pool_even(x[:, : h // 2 * 2, : w // 2 * 2, :])


def normalize(x: jax.Array, mean, std) -> jax.Array:
  """(x - mean) / std with per-channel constants; inputs are images in [0, 1]."""
  mean = jnp.asarray(mean, x.dtype)
  std = jnp.asarray(std, x.dtype)
  return (x - mean) / std


def check_switches(dtype: str, remat: str = "none") -> None:
  """Raises ``ValueError`` naming the bad value if ``dtype`` or ``remat`` is unknown."""
  if dtype not in DTYPES:
    raise ValueError(f"unknown model dtype {dtype!r}; valid: {sorted(DTYPES)}")
  if remat not in REMAT_POLICIES:
    raise ValueError(f"unknown model remat policy {remat!r}; valid: {sorted(REMAT_POLICIES)}")


def set_compute_dtype(model: nnx.Module, dtype: str) -> None:
  """Makes every convolution, dense and BatchNorm layer of ``model`` compute in ``dtype``
  (their inputs and weights are cast on the fly; the stored parameters keep their dtype).
  'float32' leaves the model exactly as built."""
  check_switches(dtype)
  if DTYPES[dtype] is None:
    return
  for _, m in nnx.iter_modules(model):
    if isinstance(m, (nnx.Conv, nnx.Linear, nnx.BatchNorm)):
      m.dtype = DTYPES[dtype]


def as_float32(tree):
  """Casts the arrays of ``tree`` (logits, feature maps) to float32, for losses and attacks;
  a no-op for a float32 model."""
  return jax.tree.map(lambda a: a.astype(jnp.float32), tree)


def _call(block, h):
  return block(h)


def run_block(block: nnx.Module, h: jax.Array, remat: str) -> jax.Array:
  """``block(h)``, under ``jax.checkpoint`` with policy ``remat`` unless it is 'none'. The
  values and gradients are the same; the backward pass recomputes what the policy does not
  store. BatchNorm's statistics update as without it."""
  if remat == "none":
    return block(h)
  return nnx.remat(_call, policy=REMAT_POLICIES[remat])(block, h)
