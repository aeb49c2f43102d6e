"""varloss: measure, explain and correct the variance loss of variational autoencoders."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("varloss")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

# `varloss.measure(...)` is the function (the module stays importable as `varloss.measure`).
from varloss.measure import VarianceReport, measure, measure_model  # noqa: E402

__all__ = ["VarianceReport", "__version__", "measure", "measure_model"]
