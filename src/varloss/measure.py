"""Deprecated module: `measure` lives in `varloss.variance`, the input readers in `varloss.data`.

`from varloss.measure import X` keeps working for every name this module had, with a
DeprecationWarning naming the new home. The module is also callable, so `varloss.measure(...)`
stays the function even after `import varloss.measure` has put this module in its place.
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import Any

from varloss import data, variance
from varloss.data import convert, files, readers
from varloss.variance import measurement, model, report

# old name -> (new module, its name there)
_MOVED: dict[str, tuple[types.ModuleType, str]] = {
    "IMAGE_SUFFIXES": (files, "IMAGE_SUFFIXES"),
    "Source": (readers, "Source"),
    "ValueRange": (convert, "ValueRange"),
    "open_source": (readers, "open_source"),
    "read_images": (readers, "read_images"),
    "SET_NAMES": (measurement, "SET_NAMES"),
    "measure": (measurement, "measure"),
    "MAP_SUMMARY_KEYS": (report, "MAP_SUMMARY_KEYS"),
    "VarianceReport": (report, "VarianceReport"),
    "report_from_moments": (report, "report_from_moments"),
    "measure_model": (model, "measure_model"),
    "model_device": (model, "model_device"),
}
_PUBLIC_HOME = {readers: data, files: data, convert: data}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'varloss.measure' has no attribute {name!r}")
    module, new_name = _MOVED[name]
    home = _PUBLIC_HOME.get(module, variance if hasattr(variance, new_name) else module)
    warnings.warn(
        f"varloss.measure.{name} is deprecated; use {home.__name__}.{new_name}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(module, new_name)


def __dir__() -> list[str]:
    return sorted(_MOVED)


class _CallableModule(types.ModuleType):
    """This module, callable as `varloss.variance.measure` (the function it used to shadow)."""

    def __call__(self, *args: Any, **kwargs: Any) -> variance.VarianceReport:
        return measurement.measure(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
