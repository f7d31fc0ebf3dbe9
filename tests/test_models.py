"""Models: shapes, features, parameter counts of the CIFAR forms, reshape max-pool."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import models
from robust_distill.models.layers import max_pool_2x2


def _count(m):
  return sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


def test_reshape_max_pool_matches_reduce_window():
  x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
  want = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
  np.testing.assert_array_equal(max_pool_2x2(x), want)
  g = jax.grad(lambda x: max_pool_2x2(x).sum())(x)
  assert float(g.sum()) == 2 * 4 * 3 * 3  # one unit of gradient per pooled output


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
