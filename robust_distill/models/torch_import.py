"""Import PyTorch (and RobustBench) weights into this library's NNX models.

``from_torch(path, arch)`` reads a PyTorch ``state_dict`` file safely (``torch.load(...,
weights_only=True)``: tensors and plain containers only, no pickled code is run), maps its keys
onto the NNX model of ``arch`` and returns the model in eval mode. Key names follow:

* ``wrn34_10``, ``wrn34_20``, ``wrn28_10``, ``wide_resnet``: RobustBench's ``WideResNet``
  (``conv1``, ``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}``, ``bn1``, ``fc``),
  e.g. the LTD models ``Chen2021LTD_WRN34_10`` / ``Chen2021LTD_WRN34_20`` and TRADES's
  WRN-34-10; the unused ``sub_block1`` of some RobustBench models is ignored;
* ``resnet18``: the usual CIFAR ResNet-18 (``conv1``, ``bn1``,
  ``layer{1..4}.{i}.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}``, ``linear``), as in RSLAD,
  AdaAD, DGAD and ARD;
* ``preact_resnet18``: RobustBench's / Rice et al.'s PreActResNet-18 (``conv1``,
  ``layer{1..4}.{i}.{bn1,conv1,bn2,conv2,shortcut.0}``, ``bn``, ``linear``);
* ``resnet50``: torchvision's ResNet-50 (``layer{1..4}.{i}.{conv1..3,bn1..3,downsample.0/1}``,
  ``fc``), e.g. RobustBench's ImageNet models.

Wrappers are unwrapped: a checkpoint dict holding the weights under ``state_dict``, ``net``,
``model`` or ``model_state_dict``, and the key prefixes ``module.`` (DataParallel) and ``model.``
(RobustBench's normalisation wrapper). Missing, unexpected or mis-shaped keys raise a
``ValueError`` that lists them. Inputs of the returned model are NHWC images in [0, 1]; set
``mean``/``std`` (model keyword arguments) to the normalisation the PyTorch model applied
outside its ``state_dict``.
"""

import os
import re

from flax import nnx
import jax
import numpy as np

from robust_distill.models import registry

ARCHS = (
  "wrn34_10",
  "wrn34_20",
  "wrn28_10",
  "wide_resnet",
  "resnet18",
  "preact_resnet18",
  "resnet50",
)
_WRAPPERS = ("state_dict", "model_state_dict", "net", "model")
_PREFIXES = ("module.", "model.")
# Keys that PyTorch models carry but that do not change the function in eval mode.
_IGNORED = (
  r".*num_batches_tracked$",
  r"^sub_block1\..*",
  r"^(mu|sigma|mean|std)$",
  r"^normalize\..*",
)
_LEAF = {
  "kernel": "weight",
  "scale": "weight",
  "bias": "bias",
  "mean": "running_mean",
  "var": "running_var",
}


def _stage_and_index(stages, k):
  for s, n in enumerate(stages):
    if k < n:
      return s, k
    k -= n
  raise ValueError(f"block {k} beyond stages {stages}")


def torch_key(arch: str, path: tuple, stages=(2, 2, 2, 2)) -> str:
  """The PyTorch ``state_dict`` key of the NNX parameter at ``path`` for ``arch``."""
  *mods, leaf = [str(p) for p in path]
  name = _LEAF[leaf]
  if arch in ("wrn34_10", "wrn34_20", "wrn28_10", "wide_resnet"):
    if mods[0] == "groups":
      g, j, layer = int(mods[1]), int(mods[2]), mods[3]
      layer = "convShortcut" if layer == "shortcut" else layer
      return f"block{g + 1}.layer.{j}.{layer}.{name}"
    return {"conv1": "conv1", "bn": "bn1", "head": "fc"}[mods[0]] + "." + name
  head = "fc" if arch == "resnet50" else "linear"
  if mods[0] == "blocks":
    s, j = _stage_and_index(stages, int(mods[1]))
    rest = mods[2:]
    if rest[0] == "shortcut":
      short = "downsample" if arch == "resnet50" else "shortcut"
      rest = [f"{short}.{rest[2]}"] if len(rest) > 1 else [f"{short}.0"]
    return f"layer{s + 1}.{j}.{'.'.join(rest)}.{name}"
  return {"conv1": "conv1", "bn1": "bn1", "bn": "bn", "head": head}[mods[0]] + "." + name


def _to_flax(value: np.ndarray, ndim: int) -> np.ndarray:
  """PyTorch layout -> Flax layout: conv OIHW -> HWIO, linear (out, in) -> (in, out)."""
  if ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if ndim == 2:
    return value.T
  return value


def read_state_dict(path: str) -> dict:
  """A PyTorch file's ``state_dict`` as numpy arrays (``weights_only=True``; wrappers removed)."""
  import torch  # noqa: PLC0415  (optional dependency: only reading a PyTorch file needs it)

  if not os.path.exists(path):
    raise FileNotFoundError(f"no PyTorch checkpoint at {path}")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # any unpickling failure means: not a weights-only file
    raise ValueError(
      f"{path} cannot be read as a weights-only PyTorch file (it may hold "
      f"pickled code, which is never executed here): {e}"
    ) from e
  while isinstance(obj, dict) and not any(hasattr(v, "shape") for v in obj.values()):
    inner = [k for k in _WRAPPERS if isinstance(obj.get(k), dict)]
    if not inner:
      raise ValueError(f"{path}: no state_dict found; top-level keys {sorted(obj)[:20]}")
    obj = obj[inner[0]]
  out = {}
  for k, v in obj.items():
    if not hasattr(v, "shape"):
      continue
    for pre in _PREFIXES:
      if k.startswith(pre):
        k = k[len(pre) :]
    out[k] = v.detach().cpu().numpy()
  return out


def from_torch(
  path_or_state_dict, arch: str, *, num_classes: int | None = None, **model_kwargs
) -> nnx.Module:
  """Builds ``arch`` with the weights of a PyTorch ``state_dict`` (a file path or a dict of
  arrays), in eval mode. ``num_classes`` defaults to the size of the classifier in the file;
  other keyword arguments go to the model (``mean``, ``std``, ``in_channels``, ``width``...)."""
  if arch not in ARCHS:
    raise ValueError(f"Unknown arch {arch!r} for a PyTorch import; valid: {list(ARCHS)}")
  sd = (
    read_state_dict(path_or_state_dict)
    if isinstance(path_or_state_dict, (str, os.PathLike))
    else {k: np.asarray(v) for k, v in path_or_state_dict.items()}
  )
  head = {"resnet50": "fc", "resnet18": "linear", "preact_resnet18": "linear"}.get(arch, "fc")
  if num_classes is None:
    if f"{head}.weight" not in sd:
      raise ValueError(f"the state_dict has no classifier {head}.weight; pass num_classes")
    num_classes = sd[f"{head}.weight"].shape[0]
  model = registry.build(arch, num_classes=num_classes, **model_kwargs)
  stages = getattr(model, "stage_ends", None)
  stages = tuple(b - a for a, b in zip((-1,) + stages[:-1], stages)) if stages else (2, 2, 2, 2)
  state = nnx.state(model)
  pure = nnx.to_pure_dict(state)
  flat = jax.tree_util.tree_flatten_with_path(pure)[0]
  wanted = {}
  for p, v in flat:
    path = tuple(getattr(k, "key", getattr(k, "idx", k)) for k in p)
    wanted[torch_key(arch, path, stages)] = (path, np.shape(v))
  missing = sorted(set(wanted) - set(sd))
  extra = sorted(k for k in set(sd) - set(wanted) if not any(re.match(pat, k) for pat in _IGNORED))
  shaped = sorted(
    f"{k}: file {tuple(sd[k].shape)}, model expects {tuple(_torch_shape(shape))}"
    for k, (_, shape) in wanted.items()
    if k in sd and _to_flax(sd[k], sd[k].ndim).shape != tuple(shape)
  )
  if missing or extra or shaped:
    parts = []
    for title, items in (
      ("missing keys", missing),
      ("unexpected keys", extra),
      ("mis-shaped keys", shaped),
    ):
      if items:
        shown = ", ".join(items[:25]) + (
          f", ... ({len(items) - 25} more)" if len(items) > 25 else ""
        )
        parts.append(f"{len(items)} {title}: {shown}")
    raise ValueError(
      f"the PyTorch state_dict does not match {arch} "
      f"(num_classes={num_classes}, {model_kwargs or 'default size'}):\n  " + "\n  ".join(parts)
    )
  values = {}
  for k, (path, _) in wanted.items():
    values[path] = _to_flax(sd[k], sd[k].ndim).astype(np.float32)

  def fill(tree, prefix=()):
    if isinstance(tree, dict):
      return {k: fill(v, prefix + (k,)) for k, v in tree.items()}
    return values[prefix]

  nnx.replace_by_pure_dict(state, fill(pure))
  nnx.update(model, state)
  model.eval()
  return model


def _torch_shape(flax_shape):
  s = tuple(flax_shape)
  if len(s) == 4:
    return (s[3], s[2], s[0], s[1])
  if len(s) == 2:
    return (s[1], s[0])
  return s
