"""PyTorch / RobustBench teacher import: the PyTorch architectures (written here after
RobustBench's WideResNet and PreActResNet-18, the usual CIFAR ResNet-18 and torchvision's
ResNet-50) with random weights and BatchNorm statistics, saved as a state_dict, imported, and
compared in eval mode; bad files give errors that list the offending keys."""

from flax import nnx
import jax
import numpy as np
import pytest

from robust_distill import config as config_lib, import_teacher, models, restore
from robust_distill.models import torch_import
from robust_distill.train import loop

from conftest import ROOT

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class WideBasic(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn2, self.relu2 = nn.BatchNorm2d(cout), nn.ReLU()
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.equal = cin == cout
    self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

  def forward(self, x):
    if not self.equal:
      x = self.relu1(self.bn1(x))
      out = x
    else:
      out = self.relu1(self.bn1(x))
    out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
    return (x if self.equal else self.convShortcut(x)) + out


class Group(nn.Module):
  def __init__(self, n, cin, cout, stride):
    super().__init__()
    self.layer = nn.Sequential(
      *[WideBasic(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
    )

  def forward(self, x):
    return self.layer(x)


class TorchWRN(nn.Module):
  """RobustBench's WideResNet layout (with the unused sub_block1 of some of its models)."""

  def __init__(self, depth=16, widen=2, num_classes=10, sub_block1=True):
    super().__init__()
    n, w = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
    self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
    self.block1 = Group(n, w[0], w[1], 1)
    if sub_block1:
      self.sub_block1 = Group(n, w[0], w[1], 1)
    self.block2, self.block3 = Group(n, w[1], w[2], 2), Group(n, w[2], w[3], 2)
    self.bn1, self.relu = nn.BatchNorm2d(w[3]), nn.ReLU()
    self.fc = nn.Linear(w[3], num_classes)

  def forward(self, x):
    out = self.block3(self.block2(self.block1(self.conv1(x))))
    out = F.adaptive_avg_pool2d(self.relu(self.bn1(out)), 1).flatten(1)
    return self.fc(out)


class Basic(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
    self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
      )

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreAct(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

  def forward(self, x):
    out = F.relu(self.bn1(x))
    sc = self.shortcut(out) if hasattr(self, "shortcut") else x
    out = self.conv2(F.relu(self.bn2(self.conv1(out))))
    return out + sc


class TorchResNet18(nn.Module):
  """The CIFAR ResNet-18 (``preact=False``) or RobustBench's PreActResNet-18 (``True``)."""

  def __init__(self, preact=False, num_classes=10):
    super().__init__()
    block = PreAct if preact else Basic
    self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    if not preact:
      self.bn1 = nn.BatchNorm2d(64)
    cin, layers = 64, []
    for i, cout in enumerate((64, 128, 256, 512)):
      layers.append(nn.Sequential(block(cin, cout, 1 if i == 0 else 2), block(cout, cout, 1)))
      cin = cout
    self.layer1, self.layer2, self.layer3, self.layer4 = layers
    self.preact = preact
    if preact:
      self.bn = nn.BatchNorm2d(512)
    self.linear = nn.Linear(512, num_classes)

  def forward(self, x):
    out = self.conv1(x)
    out = out if self.preact else F.relu(self.bn1(out))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    out = F.relu(self.bn(out)) if self.preact else out
    return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class Bottleneck(nn.Module):
  def __init__(self, cin, mid, stride):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
    self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
    self.conv3, self.bn3 = nn.Conv2d(mid, 4 * mid, 1, bias=False), nn.BatchNorm2d(4 * mid)
    self.downsample = None
    if stride != 1 or cin != 4 * mid:
      self.downsample = nn.Sequential(
        nn.Conv2d(cin, 4 * mid, 1, stride, bias=False), nn.BatchNorm2d(4 * mid)
      )

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchResNet50(nn.Module):
  """torchvision's ResNet-50 layout, at a reduced width for speed."""

  def __init__(self, width=8, num_classes=20):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin, layers = width, []
    for i, n in enumerate((3, 4, 6, 3)):
      mid = width * 2**i
      layers.append(
        nn.Sequential(
          *[
            Bottleneck(cin if j == 0 else 4 * mid, mid, 2 if (j == 0 and i > 0) else 1)
            for j in range(n)
          ]
        )
      )
      cin = 4 * mid
    self.layer1, self.layer2, self.layer3, self.layer4 = layers
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _randomize(model, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if t.dtype.is_floating_point:
        if name.endswith("running_var"):
          t.copy_(0.5 + torch.rand(t.shape, generator=g))
        elif name.endswith("running_mean") or name.endswith("bias"):
          t.copy_(0.2 * torch.randn(t.shape, generator=g))
        elif t.ndim == 1:  # BN scale
          t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=g))
        else:
          t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
  return model.eval()


@pytest.mark.parametrize(
  "arch,make,kwargs,size",
  [
    ("wide_resnet", lambda: TorchWRN(depth=16, widen=2), dict(depth=16, widen=2), 32),
    ("resnet18", lambda: TorchResNet18(False), {}, 32),
    ("preact_resnet18", lambda: TorchResNet18(True), {}, 32),
    # torchvision normalises outside the model: no normalisation inside ours either. Slow
    # (`-m slow`): compiling 16 bottleneck blocks is 40 s of the default suite's budget.
    pytest.param(
      "resnet50",
      lambda: TorchResNet50(width=8),
      dict(width=8, mean=(0.0,) * 3, std=(1.0,) * 3),
      64,
      marks=pytest.mark.slow,
    ),
  ],
)
def test_imported_model_matches_pytorch_in_eval_mode(tmp_path, arch, make, kwargs, size):
  tm = _randomize(make(), seed=0)
  path = str(tmp_path / "teacher.pt")
  # DataParallel-style 'module.' prefix inside a checkpoint dict, as many repositories save.
  torch.save({"net": {"module." + k: v for k, v in tm.state_dict().items()}, "epoch": 3}, path)
  jm = torch_import.from_torch(path, arch, **kwargs)
  x = np.random.default_rng(1).uniform(size=(4, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    want = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(np.asarray(jm(x)), want, rtol=1e-4, atol=1e-4)


def test_wrn34_keys_follow_robustbench():
  """The WRN-34-10 mapping produces exactly RobustBench's key set (checked on names only)."""
  model = nnx.eval_shape(lambda: models.build("wrn34_10"))
  flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model)))[0]
  ours = {
    torch_import.torch_key("wrn34_10", tuple(getattr(k, "key", k) for k in p)) for p, _ in flat
  }
  ref = {
    k
    for k in TorchWRN(depth=34, widen=2, sub_block1=False).state_dict()
    if not k.endswith("num_batches_tracked")
  }
  assert ours == ref


def test_bad_state_dicts_list_the_offending_keys(tmp_path):
  sd = _randomize(TorchResNet18(False), 0).state_dict()
  bad = dict(sd)
  bad.pop("layer1.0.conv1.weight")
  bad["layer9.extra.weight"] = torch.zeros(3)
  bad["linear.weight"] = torch.zeros(10, 256)
  path = str(tmp_path / "bad.pt")
  torch.save(bad, path)
  with pytest.raises(ValueError) as e:
    torch_import.from_torch(path, "resnet18")
  msg = str(e.value)
  assert "1 missing keys: layer1.0.conv1.weight" in msg
  assert "1 unexpected keys: layer9.extra.weight" in msg
  assert "mis-shaped keys: linear.weight: file (10, 256), model expects (10, 512)" in msg

  # A file that would need pickled code is refused, not executed.
  class Evil:
    def __reduce__(self):
      return (print, ("executed",))

  torch.save({"x": Evil()}, str(tmp_path / "evil.pt"))
  with pytest.raises(ValueError, match="weights-only"):
    torch_import.from_torch(str(tmp_path / "evil.pt"), "resnet18")


@pytest.mark.slow  # a distillation run with an imported WRN teacher: over a minute
def test_imported_teacher_is_the_teacher_stage_of_a_distillation_run(tmp_path):
  """python -m robust_distill.import_teacher, then the training command: the teacher stage is
  skipped and the student distils from the imported network (RSLAD's CIFAR-10 config, narrowed
  networks, synthetic CIFAR-shaped data, 2 steps)."""
  cfg_file = tmp_path / "rslad_narrow.py"
  cfg_file.write_text(
    "import os\n\nfrom robust_distill import config\n\n\n"
    "def get_config(arg):\n"
    f"  c = config.load(os.path.join({ROOT!r}, 'configs', arg + '.py:cifar10'))\n"
    "  c.teacher.model, c.teacher.model_kwargs = 'wide_resnet', dict(depth=10, widen=1)\n"
    "  c.student.model_kwargs = dict(width=8)\n"
    "  c.dataset, c.steps, c.data.mock_examples = 'mock', 2, 64\n"
    "  return c\n"
  )
  tm = _randomize(TorchWRN(depth=10, widen=1, sub_block1=False), seed=2)
  path = str(tmp_path / "robustbench.pt")
  torch.save({"state_dict": tm.state_dict()}, path)
  wd = str(tmp_path / "run")
  argv = [f"--torch={path}", f"--config={cfg_file}:rslad", f"--workdir={wd}"]
  import_teacher.main(argv)  # the README's command line
  c = config_lib.load(f"{cfg_file}:rslad")
  res = loop.run(c, wd)
  assert "clean_acc" in res
  teacher = restore(wd, stage="teacher")
  x = np.random.default_rng(3).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    want = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(np.asarray(teacher(x)), want, rtol=1e-4, atol=1e-4)
  with pytest.raises(SystemExit, match="already holds a finished teacher"):
    import_teacher.main(argv)
