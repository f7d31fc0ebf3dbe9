"""FLOPs of a model's passes, by XLA's cost analysis of the compiled programs on one device.

``xla_flops(fn, *args)`` counts any jittable function; ``forward_flops`` is one image's forward
pass of a model built by name; ``per_image_flops`` gives the three passes adversarial training
is made of, per image: a forward, an attack pass (forward and gradient with respect to the
input) and a training pass (forward and gradient with respect to the weights). The benchmarks,
the study's report and the tests count FLOPs through these.
"""

from flax import nnx
import jax
import jax.numpy as jnp

from robust_distill.models.registry import build_for_data


def xla_flops(fn, *args) -> float:
  """XLA's FLOP count of ``fn(*args)``, jitted and compiled for one device."""
  ca = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((ca[0] if isinstance(ca, (list, tuple)) else ca)["flops"])


def forward_flops(model: str, model_kwargs, shape=(28, 28, 1), classes: int = 10) -> float:
  """FLOPs of one forward pass of one image through ``model`` (a registry name) built with
  ``model_kwargs`` for images of ``shape`` and ``classes`` classes, in eval mode."""
  m = build_for_data(model, model_kwargs, num_classes=classes, image_shape=tuple(shape))
  m.eval()
  graphdef, state = nnx.split(m)
  return xla_flops(lambda st, x: nnx.merge(graphdef, st)(x), state, jnp.zeros((1, *shape)))


def per_image_flops(apply, params, stats, shape, batch: int = 64) -> dict:
  """Forward, attack-pass and training-pass FLOPs per image of ``apply`` (a
  ``models.make_apply`` function) at ``params, stats``, counted on a batch of ``batch``
  images of ``shape`` with a cross-entropy loss: ``{"forward", "attack", "train"}``."""
  x = jnp.zeros((batch, *shape), jnp.float32)
  y = jnp.zeros((batch,), jnp.int32)

  def ce(p, z):
    logits = apply(p, stats, z, train=False)[0]
    return -jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(batch), y])

  fwd = xla_flops(lambda z: apply(params, stats, z, train=False)[0], x)
  att = xla_flops(jax.grad(ce, argnums=1), params, x)
  trn = xla_flops(jax.grad(ce, argnums=0), params, x)
  return {"forward": fwd / batch, "attack": att / batch, "train": trn / batch}
