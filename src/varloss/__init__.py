"""varloss: measure, explain and correct the variance loss of variational autoencoders."""

from typing import Any

from varloss import variance
from varloss._version import __version__
from varloss.variance import VarianceReport, measure, measure_model

__all__ = ["VarianceLoss", "VarianceReport", "__version__", "measure", "measure_model"]


def __getattr__(name: str) -> Any:
    if name == "VarianceLoss":  # from varloss.variance on first use (torchmetrics is slow to load)
        return variance.VarianceLoss
    raise AttributeError(f"module 'varloss' has no attribute {name!r}")
