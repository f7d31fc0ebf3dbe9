"""ResNets in Flax NNX: the CIFAR forms of ResNet-18, PreAct-ResNet-18 and WideResNet (3x3 stem,
no initial max-pool) and the ImageNet ResNet-50 (7x7 stem, max-pool, bottlenecks, stride in the
3x3 convolution as in torchvision).

BatchNorm follows PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5). Inputs are NHWC
in [0, 1]; per-channel normalisation is inside the model (identity by default, as RobustBench's
models expect raw [0, 1] inputs).

Every model takes ``dtype`` ('float32' or 'bfloat16': the dtype the layers compute in; logits
and features come out float32) and ``remat`` ('none', 'nothing' or 'dots': ``jax.checkpoint``
with that policy around each residual block); see ``models.layers``.
"""

from collections.abc import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from robust_distill.models.layers import (
  as_float32,
  check_switches,
  normalize,
  run_block,
  set_compute_dtype,
)


def _bn(c, rngs):
  return nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, rngs=rngs)


def _conv(i, o, k, stride, rngs):
  pad = k // 2
  return nnx.Conv(
    i,
    o,
    kernel_size=(k, k),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    rngs=rngs,
  )


def _classify(head, h, feats, return_features):
  """Global average pooling -> linear head; optionally also the features, ``last`` (the feature
  map that is pooled, AGKD-BML's attention layer) and the pooled ``embedding``."""
  emb = jnp.mean(h, axis=(1, 2))
  logits = as_float32(head(emb))
  if return_features:
    return logits, as_float32({**feats, "last": h, "embedding": emb})
  return logits


def _projection(cin, cout, stride, rngs):
  """The shortcut of a post-activation block: 1x1 conv + BN where the shape changes, else
  ``None`` (identity)."""
  needs = stride != 1 or cin != cout
  return nnx.data(
    nnx.Sequential(_conv(cin, cout, 1, stride, rngs), _bn(cout, rngs)) if needs else None
  )


def _run_blocks(blocks, stage_ends, h, remat):
  """Applies ``blocks`` in order (each under remat policy ``remat``); returns the output and the
  feature map at the end of each stage (``block1`` ... ``blockN``)."""
  feats = {}
  for i, blk in enumerate(blocks):
    h = run_block(blk, h, remat)
    if i in stage_ends:
      feats[f"block{stage_ends.index(i) + 1}"] = h
  return h, feats


class BasicBlock(nnx.Module):
  """Post-activation residual block of ResNet-18."""

  def __init__(self, cin, cout, stride, *, rngs):
    self.conv1, self.bn1 = _conv(cin, cout, 3, stride, rngs), _bn(cout, rngs)
    self.conv2, self.bn2 = _conv(cout, cout, 3, 1, rngs), _bn(cout, rngs)
    self.shortcut = _projection(cin, cout, stride, rngs)

  def __call__(self, x):
    h = jax.nn.relu(self.bn1(self.conv1(x)))
    h = self.bn2(self.conv2(h))
    sc = x if self.shortcut is None else self.shortcut(x)
    return jax.nn.relu(h + sc)


class ResNet18(nnx.Module):
  """ResNet-18 in its CIFAR form (He et al. 2016; the form used by RSLAD/AdaAD/DGAD students)."""

  def __init__(
    self,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    stages: Sequence[int] = (2, 2, 2, 2),
    width: int = 64,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    dtype: str = "float32",
    remat: str = "none",
    rngs: nnx.Rngs,
  ):
    check_switches(dtype, remat)
    self.mean, self.std, self.remat = tuple(mean), tuple(std), remat
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
    set_compute_dtype(self, dtype)

  def __call__(self, x, return_features: bool = False):
    h = jax.nn.relu(self.bn1(self.conv1(normalize(x, self.mean, self.std))))
    h, feats = _run_blocks(self.blocks, self.stage_ends, h, self.remat)
    return _classify(self.head, h, feats, return_features)


class PreActBlock(nnx.Module):
  """Pre-activation residual block (He et al. 2016b); the shortcut convolution sees the
  activated input, as in Rice et al.'s and RobustBench's PreActResNet-18."""

  def __init__(self, cin, cout, stride, *, rngs):
    self.bn1, self.conv1 = _bn(cin, rngs), _conv(cin, cout, 3, stride, rngs)
    self.bn2, self.conv2 = _bn(cout, rngs), _conv(cout, cout, 3, 1, rngs)
    needs = stride != 1 or cin != cout
    self.shortcut = nnx.data(_conv(cin, cout, 1, stride, rngs) if needs else None)

  def __call__(self, x):
    o = jax.nn.relu(self.bn1(x))
    sc = x if self.shortcut is None else self.shortcut(o)
    h = self.conv2(jax.nn.relu(self.bn2(self.conv1(o))))
    return h + sc


class PreActResNet18(nnx.Module):
  """PreAct-ResNet-18 in its CIFAR form with a final BatchNorm (RobustBench / Rice et al.)."""

  def __init__(
    self,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    stages: Sequence[int] = (2, 2, 2, 2),
    width: int = 64,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    dtype: str = "float32",
    remat: str = "none",
    rngs: nnx.Rngs,
  ):
    check_switches(dtype, remat)
    self.mean, self.std, self.remat = tuple(mean), tuple(std), remat
    self.conv1 = _conv(in_channels, width, 3, 1, rngs)
    blocks, cin = [], width
    for i, n in enumerate(stages):
      for j in range(n):
        blocks.append(PreActBlock(cin, width * 2**i, 2 if (j == 0 and i > 0) else 1, rngs=rngs))
        cin = width * 2**i
    self.blocks = nnx.List(blocks)
    self.stage_ends = tuple(sum(stages[: i + 1]) - 1 for i in range(len(stages)))
    self.bn = _bn(cin, rngs)
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)
    set_compute_dtype(self, dtype)

  def __call__(self, x, return_features: bool = False):
    h = self.conv1(normalize(x, self.mean, self.std))
    h, feats = _run_blocks(self.blocks, self.stage_ends, h, self.remat)
    return _classify(self.head, jax.nn.relu(self.bn(h)), feats, return_features)


class Bottleneck(nnx.Module):
  """ResNet-50's bottleneck block (1x1, 3x3 with the stride, 1x1 x4; torchvision's v1.5)."""

  def __init__(self, cin, mid, stride, *, rngs):
    cout = 4 * mid
    self.conv1, self.bn1 = _conv(cin, mid, 1, 1, rngs), _bn(mid, rngs)
    self.conv2, self.bn2 = _conv(mid, mid, 3, stride, rngs), _bn(mid, rngs)
    self.conv3, self.bn3 = _conv(mid, cout, 1, 1, rngs), _bn(cout, rngs)
    self.shortcut = _projection(cin, cout, stride, rngs)

  def __call__(self, x):
    h = jax.nn.relu(self.bn1(self.conv1(x)))
    h = jax.nn.relu(self.bn2(self.conv2(h)))
    h = self.bn3(self.conv3(h))
    return jax.nn.relu(h + (x if self.shortcut is None else self.shortcut(x)))


class ResNet50(nnx.Module):
  """ImageNet ResNet-50 (He et al. 2016; torchvision layout): 7x7/2 stem, 3x3/2 max-pool,
  bottleneck stages (3, 4, 6, 3). Inputs NHWC in [0, 1]; ``mean``/``std`` default to the
  ImageNet statistics, applied inside the model (attacks work in [0, 1] pixel space)."""

  def __init__(
    self,
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    stages: Sequence[int] = (3, 4, 6, 3),
    width: int = 64,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    dtype: str = "float32",
    remat: str = "none",
    rngs: nnx.Rngs,
  ):
    check_switches(dtype, remat)
    self.mean, self.std, self.remat = tuple(mean), tuple(std), remat
    self.conv1, self.bn1 = _conv(in_channels, width, 7, 2, rngs), _bn(width, rngs)
    blocks, cin = [], width
    for i, n in enumerate(stages):
      for j in range(n):
        blocks.append(Bottleneck(cin, width * 2**i, 2 if (j == 0 and i > 0) else 1, rngs=rngs))
        cin = 4 * width * 2**i
    self.blocks = nnx.List(blocks)
    self.stage_ends = tuple(sum(stages[: i + 1]) - 1 for i in range(len(stages)))
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)
    set_compute_dtype(self, dtype)

  def __call__(self, x, return_features: bool = False):
    h = jax.nn.relu(self.bn1(self.conv1(normalize(x, self.mean, self.std))))
    h = nnx.max_pool(h, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    h, feats = _run_blocks(self.blocks, self.stage_ends, h, self.remat)
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

  def __init__(
    self,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    depth: int = 34,
    widen: int = 10,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    dtype: str = "float32",
    remat: str = "none",
    rngs: nnx.Rngs,
  ):
    check_switches(dtype, remat)
    if (depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    widths = (16, 16 * widen, 32 * widen, 64 * widen)
    self.mean, self.std, self.remat = tuple(mean), tuple(std), remat
    self.conv1 = _conv(in_channels, widths[0], 3, 1, rngs)
    groups = []
    cin = widths[0]
    for g in range(3):
      blocks = []
      for j in range(n):
        blocks.append(
          WideBlock(cin, widths[g + 1], (1 if g == 0 else 2) if j == 0 else 1, rngs=rngs)
        )
        cin = widths[g + 1]
      groups.append(nnx.List(blocks))
    self.groups = nnx.List(groups)
    self.bn = _bn(cin, rngs)
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)
    set_compute_dtype(self, dtype)

  def __call__(self, x, return_features: bool = False):
    h = self.conv1(normalize(x, self.mean, self.std))
    feats = {}
    for g, blocks in enumerate(self.groups):
      for blk in blocks:
        h = run_block(blk, h, self.remat)
      feats[f"block{g + 1}"] = h
    h = jax.nn.relu(self.bn(h))
    feats["block3"] = h  # AGKD-BML's feature: relu(bn(last group)).
    return _classify(self.head, h, feats, return_features)
