"""Models chosen by name in configs (``registry``), the pure ``make_apply`` wrapper, and
``from_torch``, which imports PyTorch / RobustBench weights (``torch_import``)."""

from robust_distill.models.apply import make_apply
from robust_distill.models.registry import MODELS, build, build_for_data, check_name
from robust_distill.models.torch_import import from_torch

__all__ = ["MODELS", "build", "build_for_data", "check_name", "from_torch", "make_apply"]
