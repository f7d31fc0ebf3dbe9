"""CIFAR-form ResNet-18 and WideResNet-34-10 (3x3 stem, no initial max-pool), Flax NNX.

BatchNorm follows PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5). Inputs are NHWC
in [0, 1]; per-channel normalisation is inside the model (identity by default, as RobustBench's
models expect raw [0, 1] inputs).
"""

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from robust_distill.models.layers import normalize


def _bn(c, rngs):
  return nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, rngs=rngs)


def _conv(i, o, k, stride, rngs):
  pad = k // 2
  return nnx.Conv(i, o, kernel_size=(k, k), strides=(stride, stride),
                  padding=((pad, pad), (pad, pad)), use_bias=False, rngs=rngs)


def _classify(head, h, feats, return_features):
  """Global average pooling -> linear head; optionally also the features, ``last`` (the feature
  map that is pooled, AGKD-BML's attention layer) and the pooled ``embedding``."""
  emb = jnp.mean(h, axis=(1, 2))
  logits = head(emb)
  if return_features:
    return logits, {**feats, "last": h, "embedding": emb}
  return logits


class BasicBlock(nnx.Module):
  """Post-activation residual block of ResNet-18."""

  def __init__(self, cin, cout, stride, *, rngs):
    self.conv1, self.bn1 = _conv(cin, cout, 3, stride, rngs), _bn(cout, rngs)
    self.conv2, self.bn2 = _conv(cout, cout, 3, 1, rngs), _bn(cout, rngs)
    needs = stride != 1 or cin != cout
    self.shortcut = nnx.data(
        nnx.Sequential(_conv(cin, cout, 1, stride, rngs), _bn(cout, rngs)) if needs else None)

  def __call__(self, x):
    h = jax.nn.relu(self.bn1(self.conv1(x)))
    h = self.bn2(self.conv2(h))
    sc = x if self.shortcut is None else self.shortcut(x)
    return jax.nn.relu(h + sc)


class ResNet18(nnx.Module):
  """ResNet-18 in its CIFAR form (He et al. 2016; the form used by RSLAD/AdaAD/DGAD students)."""

  def __init__(self, *, num_classes: int = 10, in_channels: int = 3,
               stages: Sequence[int] = (2, 2, 2, 2), width: int = 64,
               mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), rngs: nnx.Rngs):
    self.mean, self.std = tuple(mean), tuple(std)
    self.conv1, self.bn1 = _conv(in_channels, width, 3, 1, rngs), _bn(width, rngs)
    blocks, cin = [], width
    for i, n in enumerate(stages):
      cout = width * 2**i
      for j in range(n):
        blocks.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1, rngs=rngs))
        cin = cout
    self.blocks = nnx.List(blocks)
    self.stage_ends = tuple(sum(stages[: i + 1]) - 1 for i in range(len(stages)))
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x, return_features: bool = False):
    h = jax.nn.relu(self.bn1(self.conv1(normalize(x, self.mean, self.std))))
    feats = {}
    for i, blk in enumerate(self.blocks):
      h = blk(h)
      if i in self.stage_ends:
        feats[f"block{self.stage_ends.index(i) + 1}"] = h
    return _classify(self.head, h, feats, return_features)


class WideBlock(nnx.Module):
  """Pre-activation wide residual block (Zagoruyko & Komodakis 2016)."""

  def __init__(self, cin, cout, stride, *, rngs):
    self.bn1, self.conv1 = _bn(cin, rngs), _conv(cin, cout, 3, stride, rngs)
    self.bn2, self.conv2 = _bn(cout, rngs), _conv(cout, cout, 3, 1, rngs)
    self.equal = cin == cout and stride == 1
    self.shortcut = nnx.data(None if self.equal else _conv(cin, cout, 1, stride, rngs))

  def __call__(self, x):
    o = jax.nn.relu(self.bn1(x))
    h = self.conv2(jax.nn.relu(self.bn2(self.conv1(o))))
    return h + (x if self.equal else self.shortcut(o))


class WideResNet(nnx.Module):
  """WideResNet-depth-widen in its CIFAR form (WRN-34-10 for TRADES/LTD teachers)."""

  def __init__(self, *, num_classes: int = 10, in_channels: int = 3, depth: int = 34,
               widen: int = 10, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), rngs: nnx.Rngs):
    if (depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    widths = (16, 16 * widen, 32 * widen, 64 * widen)
    self.mean, self.std = tuple(mean), tuple(std)
    self.conv1 = _conv(in_channels, widths[0], 3, 1, rngs)
    groups = []
    cin = widths[0]
    for g in range(3):
      blocks = []
      for j in range(n):
        blocks.append(WideBlock(cin, widths[g + 1], (1 if g == 0 else 2) if j == 0 else 1,
                                rngs=rngs))
        cin = widths[g + 1]
      groups.append(nnx.List(blocks))
    self.groups = nnx.List(groups)
    self.bn = _bn(cin, rngs)
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x, return_features: bool = False):
    h = self.conv1(normalize(x, self.mean, self.std))
    feats = {}
    for g, blocks in enumerate(self.groups):
      for blk in blocks:
        h = blk(h)
      feats[f"block{g + 1}"] = h
    h = jax.nn.relu(self.bn(h))
    feats["block3"] = h  # AGKD-BML's feature: relu(bn(last group)).
    return _classify(self.head, h, feats, return_features)
