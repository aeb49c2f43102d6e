"""Deprecated module: `VarianceLoss` lives in `varloss.variance` (`varloss.variance.metric`)."""

from __future__ import annotations

import warnings
from typing import Any

from varloss.variance import metric


def __getattr__(name: str) -> Any:
    if name != "VarianceLoss":
        raise AttributeError(f"module 'varloss.metrics' has no attribute {name!r}")
    warnings.warn(
        "varloss.metrics.VarianceLoss is deprecated; use varloss.variance.VarianceLoss",
        DeprecationWarning,
        stacklevel=2,
    )
    return metric.VarianceLoss
