"""Models: shapes, features, parameter counts of the CIFAR forms, the max-pool's values and
gradients."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import models
from robust_distill.models.layers import max_pool_2x2


def _count(m):
  return sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (2, 9, 7, 4)])
def test_max_pool_matches_reduce_window(shape):
  """Values and gradients equal nnx.max_pool's (no ties in random normals), odd sizes cropped."""
  x = jax.random.normal(jax.random.key(0), shape)
  g_out = jax.random.normal(jax.random.key(1), (shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
  want, want_vjp = jax.vjp(lambda x: nnx.max_pool(x, (2, 2), (2, 2)), x)
  got, got_vjp = jax.vjp(max_pool_2x2, x)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got_vjp(g_out)[0], want_vjp(g_out)[0])
  g = jax.jit(jax.grad(lambda x: max_pool_2x2(x).sum()))(x)
  assert float(g.sum()) == np.prod(g_out.shape)  # one unit of gradient per pooled output


def test_max_pool_gradient_at_ties_goes_to_the_first_maximum():
  """Ties (common: a constant background) route each output's gradient to one input, the first
  maximal one in row-major order, as reduce_window and PyTorch do; after a ReLU a window of
  zeros gets none (ReLU's gradient at 0 is 0)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 3, (2, 6, 8, 3)).astype(np.float32))  # many ties
  g_out = jax.random.normal(jax.random.key(1), (2, 3, 4, 3))
  want = jax.vjp(lambda x: nnx.max_pool(x, (2, 2), (2, 2)), x)[1](g_out)[0]
  np.testing.assert_array_equal(jax.vjp(max_pool_2x2, x)[1](g_out)[0], want)
  x = jnp.array([[1.0, 1.0], [1.0, 1.0]]).reshape(1, 2, 2, 1)
  g = jax.grad(lambda x: max_pool_2x2(x).sum())(x)
  np.testing.assert_array_equal(g.reshape(2, 2), [[1.0, 0.0], [0.0, 0.0]])
  x = jnp.array([[0.5, 1.0], [1.0, 1.0]]).reshape(1, 2, 2, 1)
  g = jax.grad(lambda x: max_pool_2x2(x).sum())(x)
  np.testing.assert_array_equal(g.reshape(2, 2), [[0.0, 1.0], [0.0, 0.0]])
  z = jnp.array([[-1.0, -3.0], [-0.5, -2.0]]).reshape(1, 2, 2, 1)
  g = jax.grad(lambda z: max_pool_2x2(jax.nn.relu(z)).sum())(z)
  np.testing.assert_array_equal(g, jnp.zeros_like(z))


@pytest.mark.parametrize(
  "name,shape,params,blocks,narrow",
  [
    ("small_cnn", (2, 28, 28, 1), 312_202, ("block1", "block2"), ("small_cnn", {})),
    (
      "resnet18",
      (2, 32, 32, 3),
      11_173_962,
      ("block1", "block2", "block3", "block4"),
      ("resnet18", {"width": 8}),
    ),
    (
      "wrn34_10",
      (2, 32, 32, 3),
      46_160_474,
      ("block1", "block2", "block3"),
      ("wide_resnet", {"depth": 34, "widen": 1}),
    ),
  ],
)
def test_models_logits_features_and_size(name, shape, params, blocks, narrow):
  kw = {} if name == "small_cnn" else {"in_channels": 3}
  # The full-size model's parameters, counted without allocating or initialising them.
  assert _count(nnx.eval_shape(lambda: models.build(name, **kw))) == params  # = PyTorch's
  # The forward pass (jitted: op by op, a WRN-34-10 compiles for half a minute) on the same
  # architecture at a narrow width: the same code path, at a fraction of the cost.
  m = models.build(narrow[0], **kw, **narrow[1])
  m.eval()
  graphdef, state = nnx.split(m)
  fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, return_features=True))
  logits, feats = fwd(state, jnp.zeros(shape))
  assert logits.shape == (2, 10)
  assert set(blocks) <= set(feats) and feats["embedding"].ndim == 2
  plain = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.zeros(shape))
  np.testing.assert_allclose(plain, logits, rtol=1e-5, atol=1e-6)


def test_unknown_model_lists_valid_names():
  with pytest.raises(ValueError, match="small_cnn"):
    models.build("vgg99")
