"""Export of this library's models to PyTorch modules with the same logits (for cross-checks
against PyTorch reference implementations such as the original AutoAttack).

Only what the benchmarks need: the small CNN (``small_cnn``), in eval mode, with its input
normalisation and the stage's fixed temperature inside the exported module, so that the PyTorch
module is the same function ``x in [0, 1]^{N x C x H x W} -> logits`` as the JAX model.
"""

import numpy as np
import torch
from torch import nn


class TorchSmallCNN(nn.Module):
  """PyTorch twin of ``robust_distill.models.SmallCNN`` (NCHW inputs)."""

  def __init__(self, in_channels, width, hidden, num_classes, flat, mean, std, temperature):
    super().__init__()
    w = width
    self.conv1, self.conv2 = nn.Conv2d(in_channels, w, 3), nn.Conv2d(w, w, 3)
    self.conv3, self.conv4 = nn.Conv2d(w, 2 * w, 3), nn.Conv2d(2 * w, 2 * w, 3)
    self.fc1, self.fc2 = nn.Linear(flat, hidden), nn.Linear(hidden, hidden)
    self.head = nn.Linear(hidden, num_classes)
    self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
    self.temperature = float(temperature)

  def forward(self, x):
    h = (x - self.mean) / self.std
    h = torch.relu(self.conv2(torch.relu(self.conv1(h))))
    h = nn.functional.max_pool2d(h, 2)
    h = torch.relu(self.conv4(torch.relu(self.conv3(h))))
    h = nn.functional.max_pool2d(h, 2)
    h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # the JAX model flattens NHWC
    h = torch.relu(self.fc2(torch.relu(self.fc1(h))))
    return self.head(h) / self.temperature


def _conv(dst: nn.Conv2d, src):
  dst.weight.data = torch.from_numpy(np.asarray(src.kernel.value).transpose(3, 2, 0, 1).copy())
  dst.bias.data = torch.from_numpy(np.asarray(src.bias.value).copy())


def _dense(dst: nn.Linear, src):
  dst.weight.data = torch.from_numpy(np.asarray(src.kernel.value).T.copy())
  dst.bias.data = torch.from_numpy(np.asarray(src.bias.value).copy())


def small_cnn_to_torch(module, temperature: float = 1.0) -> TorchSmallCNN:
  """A ``TorchSmallCNN`` (eval mode) with the weights of an NNX ``SmallCNN``."""
  k1 = np.asarray(module.conv1.kernel.value)
  f1 = np.asarray(module.fc1.kernel.value)
  hd = np.asarray(module.head.kernel.value)
  t = TorchSmallCNN(
    k1.shape[2],
    k1.shape[3],
    f1.shape[1],
    hd.shape[1],
    f1.shape[0],
    module.mean,
    module.std,
    temperature,
  )
  for name in ("conv1", "conv2", "conv3", "conv4"):
    _conv(getattr(t, name), getattr(module, name))
  for name in ("fc1", "fc2", "head"):
    _dense(getattr(t, name), getattr(module, name))
  return t.eval()
