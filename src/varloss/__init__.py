"""varloss: measure, explain and correct the variance loss of variational autoencoders."""

from varloss._version import __version__
from varloss.variance import VarianceLoss, VarianceReport, measure, measure_model

__all__ = ["VarianceLoss", "VarianceReport", "__version__", "measure", "measure_model"]
