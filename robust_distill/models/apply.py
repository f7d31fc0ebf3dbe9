"""A model as a pure function of its variables: ``apply(params, stats, x, train)``."""

import functools

from flax import nnx


@functools.lru_cache(maxsize=64)
def make_apply(graphdef, temperature: float = 1.0):
  """``apply(params, stats, x, train, features=False) -> (out, new_stats)``, x in [0, 1]; ``out``
  is ``logits / temperature``, or ``(logits / temperature, features)`` with ``features``.

  The same (architecture, temperature) gives the same function object, so programs compiled
  for one checkpoint (keyed on ``apply``) are reused for the next one of that architecture."""

  def apply(params, stats, x, *, train: bool, features: bool = False):
    m = nnx.merge(graphdef, params, stats, copy=True)
    if train:
      m.train()
    else:
      m.eval()
    if features:
      logits, feats = m(x, return_features=True)
      return (logits / temperature, feats), nnx.state(m, nnx.BatchStat)
    return m(x) / temperature, nnx.state(m, nnx.BatchStat)

  return apply
