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
  "name,shape,params,blocks",
  [
    ("small_cnn", (2, 28, 28, 1), 312_202, ("block1", "block2")),
    ("resnet18", (2, 32, 32, 3), 11_173_962, ("block1", "block2", "block3", "block4")),
    ("wrn34_10", (2, 32, 32, 3), 46_160_474, ("block1", "block2", "block3")),
  ],
)
def test_models_logits_features_and_size(name, shape, params, blocks):
  kw = {} if name == "small_cnn" else {"in_channels": 3}
  m = models.build(name, **kw)
  assert _count(m) == params  # matches the PyTorch reference architectures
  m.eval()
  logits, feats = m(jnp.zeros(shape), return_features=True)
  assert logits.shape == (2, 10)
  assert set(blocks) <= set(feats) and feats["embedding"].ndim == 2
  np.testing.assert_allclose(m(jnp.zeros(shape)), logits)


def test_unknown_model_lists_valid_names():
  with pytest.raises(ValueError, match="small_cnn"):
    models.build("vgg99")
