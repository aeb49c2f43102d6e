"""Variance loss: `measure`, its `VarianceReport`, the `VarianceLoss` metric, `measure_model`.

from varloss.variance import measure, measure_model, VarianceLoss, VarianceReport
"""

from typing import Any

from varloss.variance.measurement import SET_NAMES, measure
from varloss.variance.model import measure_model, model_device
from varloss.variance.report import MAP_SUMMARY_KEYS, VarianceReport, report_from_moments

__all__ = [
    "MAP_SUMMARY_KEYS",
    "SET_NAMES",
    "VarianceLoss",
    "VarianceSpectrum",
    "VarianceReport",
    "measure",
    "measure_model",
    "model_device",
    "report_from_moments",
]


def __getattr__(name: str) -> Any:
    if name == "VarianceLoss":
        # on first use: importing torchmetrics (and scipy.signal) takes ~1.8 s, measured
        from varloss.variance.metric import VarianceLoss

        return VarianceLoss
    if name == "VarianceSpectrum":
        # on first use, like VarianceLoss (it imports torchmetrics)
        from varloss.variance.spectrum_metric import VarianceSpectrum

        return VarianceSpectrum
    raise AttributeError(f"module 'varloss.variance' has no attribute {name!r}")
