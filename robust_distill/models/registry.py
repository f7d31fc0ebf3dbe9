"""The model registry: models are chosen by name in configs."""

from flax import nnx

from robust_distill.models.resnet import PreActResNet18, ResNet18, ResNet50, WideResNet
from robust_distill.models.small_cnn import SmallCNN

MODELS = {
  "small_cnn": SmallCNN,
  "resnet18": ResNet18,
  "preact_resnet18": PreActResNet18,
  "resnet50": ResNet50,
  "wrn34_10": lambda **kw: WideResNet(depth=34, widen=10, **kw),
  "wrn34_20": lambda **kw: WideResNet(depth=34, widen=20, **kw),
  "wrn28_10": lambda **kw: WideResNet(depth=28, widen=10, **kw),
  "wide_resnet": WideResNet,
}


def check_name(name: str) -> None:
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid models: {sorted(MODELS)}")


def build(name: str, *, seed: int = 0, **kwargs) -> nnx.Module:
  """Builds model ``name`` with keyword arguments from the config (plain numbers/tuples)."""
  check_name(name)
  return MODELS[name](rngs=nnx.Rngs(seed), **kwargs)


def build_for_data(
  name: str, model_kwargs, *, num_classes: int, image_shape, seed: int = 0
) -> nnx.Module:
  """Builds model ``name`` for a dataset: ``num_classes`` and the input channels (and, for the
  small CNN, the image size) are filled in unless ``model_kwargs`` sets them."""
  kw = dict(model_kwargs)
  kw.setdefault("num_classes", num_classes)
  kw.setdefault("in_channels", image_shape[-1])
  if name == "small_cnn":
    kw.setdefault("image_size", image_shape[0])
  return build(name, seed=seed, **kw)
