"""Small CNN for 28x28 grey-scale inputs (the TRADES / Fashion-MNIST workhorse)."""

from flax import nnx
import jax

from robust_distill.models.layers import (
  as_float32,
  check_switches,
  max_pool_2x2,
  normalize,
  set_compute_dtype,
)


class SmallCNN(nnx.Module):
  """conv(w)-conv(w)-pool-conv(2w)-conv(2w)-pool-dense(h)-dense(h)-dense(classes).

  With ``width=32, hidden=200`` this is the TRADES MNIST SmallCNN. No BatchNorm, so train and
  eval mode give the same function. Inputs are NHWC in [0, 1]; normalisation is inside.

  ``__call__(x, return_features=True)`` returns ``(logits, features)`` with the feature maps
  after each pooling stage (``block1``, ``block2``; ``last`` = ``block2``, the map that feeds the
  classifier) and the penultimate ``embedding``.
  """

  def __init__(
    self,
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    width: int = 32,
    hidden: int = 200,
    image_size: int = 28,
    mean=(0.5,),
    std=(0.5,),
    dtype: str = "float32",
    remat: str = "none",
    rngs: nnx.Rngs,
  ):
    check_switches(dtype, remat)
    if remat != "none":
      raise ValueError(
        f"small_cnn has no residual blocks to rematerialise (remat={remat!r}); use 'none'"
      )
    w = width
    self.mean, self.std = tuple(mean), tuple(std)
    conv = lambda i, o: nnx.Conv(i, o, kernel_size=(3, 3), padding="VALID", rngs=rngs)
    self.conv1, self.conv2 = conv(in_channels, w), conv(w, w)
    self.conv3, self.conv4 = conv(w, 2 * w), conv(2 * w, 2 * w)
    s = ((image_size - 4) // 2 - 4) // 2
    self.fc1 = nnx.Linear(2 * w * s * s, hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)
    set_compute_dtype(self, dtype)

  def __call__(self, x: jax.Array, return_features: bool = False):
    h = normalize(x, self.mean, self.std)
    h = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(h))))
    b1 = max_pool_2x2(h)
    h = jax.nn.relu(self.conv4(jax.nn.relu(self.conv3(b1))))
    b2 = max_pool_2x2(h)
    h = b2.reshape(b2.shape[0], -1)
    h = jax.nn.relu(self.fc1(h))
    emb = jax.nn.relu(self.fc2(h))
    logits = as_float32(self.head(emb))
    if return_features:
      return logits, as_float32({"block1": b1, "block2": b2, "last": b2, "embedding": emb})
    return logits
