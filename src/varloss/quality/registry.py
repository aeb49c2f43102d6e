"""The feature-extractor registry: name -> factory, like torch-fidelity's `registry.py`.

This module imports the extractor modules (never the reverse), so adding an extractor is one
`register_extractor` call and `get_extractor` never grows an if/elif chain:

    def my_factory(*, dataset, weights, batch_size, device, train, progress) -> FeatureExtractor:
        ...
    register_extractor("my-features", my_factory)
    fid(real, generated, features="my-features")
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import torch
from torch import nn

from varloss._registry import Registry
from varloss.errors import InputError
from varloss.quality.domain import DomainExtractor
from varloss.quality.extractors import FeatureExtractor, ModuleExtractor
from varloss.quality.inception import InceptionExtractor, resize_choice

# A factory gets every keyword below (it may ignore those it does not use) and returns an
# extractor: dataset (str | None), weights (path | None), batch_size, device, train, progress;
# and `resize` (a choice among the extractor's resizes) only when one is asked for, so factories
# written before it existed keep working, and refuse a resize in one sentence.
ExtractorFactory = Callable[..., FeatureExtractor]

EXTRACTORS: Registry[ExtractorFactory] = Registry(
    "feature extractor", hint="or pass an nn.Module or a FeatureExtractor"
)


def register_extractor(name: str, factory: ExtractorFactory, *, replace: bool = False) -> None:
    """Make `features=name` mean `factory(...)` in `get_extractor`, `fid` and the CLI. A name
    another factory holds is refused unless `replace` (the registries' one duplicate policy)."""
    if not isinstance(name, str) or not name.strip() or name != name.strip().lower():
        raise InputError(f"an extractor name must be a non-empty lower-case string, got {name!r}.")
    if not callable(factory):
        raise InputError(f"the factory of extractor {name!r} must be callable, got {factory!r}.")
    EXTRACTORS.register(name, factory, replace=replace)


def extractor_names() -> list[str]:
    """The registered extractor names, in registration order."""
    return EXTRACTORS.names()


def _domain(
    *, dataset, weights, batch_size, device, train, progress, resize=None
) -> FeatureExtractor:
    if resize is not None:  # refused before a classifier is trained for nothing
        raise InputError(
            f"--resize {resize} applies to Inception features (--features inception), not to the "
            "domain classifier, which reads images at their native resolution."
        )
    return DomainExtractor.for_dataset(
        dataset,
        weights=weights,
        batch_size=batch_size,
        device=device,
        train=train,
        progress=progress,
    )


def _inception(*, weights, batch_size, device, resize=None, **_unused) -> FeatureExtractor:
    # Inception-v3 at 299 x 299 is memory hungry: at most 64 images per batch.
    return InceptionExtractor(weights, batch_size=min(batch_size, 64), device=device, resize=resize)


register_extractor("domain", _domain)
register_extractor("inception", _inception)


def get_extractor(
    features: str | nn.Module | FeatureExtractor = "domain",
    *,
    dataset: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    resize: str | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    train: bool = True,
    progress: bool = True,
) -> FeatureExtractor:
    """An extractor by registered name ("domain", "inception", ...), or wrapping an `nn.Module`.

    "domain" needs `dataset` (e.g. "mnist"); its classifier is trained on first use (with a
    progress bar) and cached, unless `train` is False, or loaded from `weights` (a folder or
    model.safetensors written by varloss). `resize` picks among an extractor's resizes
    ("inception": "tf1-bilinear", the default and the papers' one, or "pil-bicubic", clean-fid's);
    None keeps the extractor's default, and an extractor without that choice refuses any other.
    """
    if resize is not None:
        resize = resize_choice(resize)  # a bad value: one sentence naming the choices
    if isinstance(features, FeatureExtractor):
        extractor = features
    elif isinstance(features, nn.Module):
        extractor = ModuleExtractor(features, batch_size=batch_size, device=device)
    elif not isinstance(features, str):
        raise EXTRACTORS.unknown(features)
    else:
        name = features.strip().lower()
        factory = EXTRACTORS[name]
        options = {"resize": resize} if resize is not None else {}
        if options and not _takes_resize(factory):
            raise InputError(
                f"--resize {resize} cannot apply to the extractor {name!r}, whose factory takes no "
                "resize; only --features inception takes --resize."
            )
        extractor = factory(
            dataset=dataset,
            weights=weights,
            batch_size=batch_size,
            device=device,
            train=train,
            progress=progress,
            **options,
        )
    if resize is not None and extractor.resize != resize:
        raise InputError(
            f"--resize {resize} cannot apply to the extractor {extractor.name!r} as made (its "
            f"resize: {extractor.resize_mode!r}); only --features inception takes --resize."
        )
    return extractor


def _takes_resize(factory: ExtractorFactory) -> bool:
    """Whether `factory` accepts a `resize` keyword (by name or through **kwargs)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: let the call decide
        return True
    return any(p.name == "resize" or p.kind is p.VAR_KEYWORD for p in parameters)
