"""The named methods `varloss correct` compares: registered samplers with settings.

A method is a registered sampler plus constructor overrides; the three two-stage methods share
one fitted second stage (`Sampler.reuse`) and differ only in how its codes are renormalised.
"""

from __future__ import annotations

from typing import Any

from varloss._registry import Registry
from varloss.errors import InputError
from varloss.samplers.base import SAMPLERS, Sampler, check_model_fit

# method name -> (sampler registry name, constructor overrides)
METHODS: Registry[tuple[str, dict[str, Any]]] = Registry(
    "correction method", hint="'all' alone names them all"
)
for _name, _method in {
    "prior": ("prior", {}),
    "two-stage": ("two-stage", {"renormalize": True, "target": "aggregate"}),
    "two-stage-raw": ("two-stage", {"renormalize": False}),
    "two-stage-spherical": ("two-stage", {"renormalize": True, "target": "spherical"}),
    "temperature": ("temperature", {}),
    "match": ("match", {}),
    "ot": ("ot", {}),
    "spectral": ("spectral", {}),
    "gmm": ("gmm", {}),
}.items():
    METHODS.register(_name, _method)
ALL_METHODS: tuple[str, ...] = tuple(METHODS)
BASELINE = "prior"
"""The method every other one is compared with; always evaluated, always first."""


def create_sampler(method: str, **params: Any) -> Sampler:
    """A fresh sampler for a method name of `METHODS` (e.g. "two-stage-raw"), with overrides."""
    registry_name, defaults = METHODS[method]  # an unknown name: one sentence
    return SAMPLERS[registry_name](**{**defaults, **params})


def parse_methods(method: str) -> list[str]:
    """'all', one method name, or a comma-separated list -> validated method names (prior first)."""
    names = [part.strip() for part in str(method).split(",") if part.strip()]
    if not names:
        raise InputError(f"method must name a correction method or 'all', got {method!r}.")
    if names == ["all"]:
        return list(ALL_METHODS)
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise METHODS.unknown(unknown[0])
    return [BASELINE] + [name for name in dict.fromkeys(names) if name != BASELINE]


def check_methods_fit(methods: list[str], model: Any) -> None:
    """Refuse, before anything is fitted, the methods whose sampler assumes what the model
    breaks (`check_model_fit`: codes from its encoder, or an N(0, I) prior)."""
    check_model_fit(model, {name: SAMPLERS[METHODS[name][0]] for name in methods})
