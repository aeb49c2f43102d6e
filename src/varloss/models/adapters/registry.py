"""Model sources by prefix: `pythae:PATH`, `diffusers:PATH`, `varloss:PATH` (or a bare path).

    adapter = load_adapter("pythae:runs/final_model")     # a ModelAdapter, on the CPU
    adapter = load_adapter("runs/mnist")                    # a varloss run folder, as before

`ADAPTERS` maps a prefix to a loader `loader(path, **options) -> ModelAdapter`; this module
imports the loaders (never the reverse), so a new kind is one `register_adapter` call. Your own
kinds register from a plugin module, found like your own model families (`varloss --plugin
MODULE`, `VARLOSS_PLUGINS`, the `varloss.models` entry points): a prefix not known here makes
varloss import the plugins once before it gives up.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from varloss._registry import Registry
from varloss.errors import InputError
from varloss.models.adapters.base import AdapterLoader, ModelAdapter
from varloss.models.adapters.diffusers import load_diffusers
from varloss.models.adapters.native import VarlossAdapter, load_varloss
from varloss.models.adapters.pythae import load_pythae
from varloss.models.base import VAE
from varloss.models.registry import PLUGINS_ENV, load_plugins

__all__ = [
    "ADAPTERS",
    "DEFAULT_PREFIX",
    "as_adapter",
    "load_adapter",
    "register_adapter",
    "split_spec",
]

ADAPTERS: Registry[AdapterLoader] = Registry(
    "model prefix",
    hint=f"or give a varloss run folder (your own kinds: register_adapter in a module named in "
    f"{PLUGINS_ENV} or --plugin)",
)
DEFAULT_PREFIX = "varloss"  # a path without a prefix is a varloss run or model folder
_PREFIX = re.compile(r"^([a-z][a-z0-9_-]*):(.*)$", re.DOTALL)


def register_adapter(prefix: str, loader: AdapterLoader, *, replace: bool = False) -> None:
    """Make `PREFIX:PATH` mean `loader(PATH, **options)` in `load_adapter` and the CLI. A prefix
    another loader holds is refused unless `replace` (the registries' one duplicate policy)."""
    if not isinstance(prefix, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", prefix):
        raise InputError(
            f"an adapter prefix must be a lower-case word (letters, digits, - or _), got "
            f"{prefix!r}."
        )
    if not callable(loader):
        raise InputError(f"the loader of adapter prefix {prefix!r} must be callable.")
    ADAPTERS.register(prefix, loader, replace=replace)


register_adapter("varloss", load_varloss)
register_adapter("pythae", load_pythae)
register_adapter("diffusers", load_diffusers)


def split_spec(spec: str | Path) -> tuple[str, str]:
    """(prefix, path) of a model spec; a bare path (or an existing one with a colon) is varloss."""
    text = str(spec)
    match = _PREFIX.match(text)
    if match is None or (match.group(1) not in ADAPTERS and Path(text).exists()):
        return DEFAULT_PREFIX, text
    return match.group(1), match.group(2)


def load_adapter(
    spec: str | Path, *, device: str | torch.device = "cpu", **options: Any
) -> ModelAdapter:
    """The model `spec` names (`PREFIX:PATH` or a varloss folder), as an adapter on `device`
    ("auto": CUDA when present).

    `options` go to the kind's loader (`value_range=` for pythae, `batch_size=` for pythae and
    diffusers). An unknown prefix, a missing folder or a folder of another kind is an
    InputError naming the input and what was expected.
    """
    prefix, path = split_spec(spec)
    if prefix not in ADAPTERS:
        load_plugins()  # your own kinds register when their module is imported
    loader = ADAPTERS[prefix]  # an unknown prefix: one sentence, with the plugin hint
    if not path:
        raise InputError(f"model {str(spec)!r} names no folder after {prefix}:.")
    adapter = loader(path, device=resolve_device(device), **options)
    if not isinstance(adapter, ModelAdapter):
        raise InputError(
            f"the loader of prefix {prefix!r} returned {type(adapter).__name__}, not a "
            "ModelAdapter."
        )
    return adapter


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device that torch can compute on here; "auto" (or None, "") is CUDA
    when present, else the CPU. The one check of every `--device` (measure, correct, train): a
    device torch knows but cannot run a model on (`meta`, a missing `cuda:7`) is one
    InputError, before any model file is read."""
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}.") from None
    if found.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} was asked for but CUDA is not available here.")
    try:  # a tensor made, computed on and copied back: what running a model needs
        torch.ones(1, device=found).add(1).cpu()
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, NotImplementedError...
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(
            f"device {str(device)!r} cannot run models here ({reason.rstrip('.')}); expected "
            "auto, cpu, cuda or cuda:N."
        ) from None
    return found


def as_adapter(model: Any) -> Any:
    """A varloss `VAE` wrapped as an adapter; an adapter (or any other object) as it is."""
    return VarlossAdapter(model) if isinstance(model, VAE) else model
