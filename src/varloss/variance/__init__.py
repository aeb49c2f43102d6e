"""Variance loss: `measure`, its `VarianceReport`, the `VarianceLoss` metric, `measure_model`.

    from varloss.variance import measure, measure_model, VarianceLoss, VarianceReport
"""

from varloss.variance.measurement import SET_NAMES, measure
from varloss.variance.metric import VarianceLoss
from varloss.variance.model import measure_model, model_device
from varloss.variance.report import MAP_SUMMARY_KEYS, VarianceReport, report_from_moments

__all__ = [
    "MAP_SUMMARY_KEYS",
    "SET_NAMES",
    "VarianceLoss",
    "VarianceReport",
    "measure",
    "measure_model",
    "model_device",
    "report_from_moments",
]
