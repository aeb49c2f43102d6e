"""Registry names for help texts, read from the registries when a help page is shown.

Help texts name a registry as `{families}`, `{losses}`, `{methods}`, `{extractors}`,
`{executors}`, `{datasets}` or `{presets}`; `fill_registry_names` puts in the names registered
at that moment, plugins included (the group callback has imported --plugin modules by then).
"""

from __future__ import annotations

from collections.abc import Callable

from varloss._registry import Registry
from varloss.data.catalogue import DATASETS  # loaded by `import varloss` anyway


def _families() -> list[str]:
    from varloss.models import MODEL_FAMILIES, load_plugins

    load_plugins()  # VARLOSS_PLUGINS and installed entry points
    return list(MODEL_FAMILIES)


def _losses() -> list[str]:
    from varloss.losses import LIKELIHOODS

    return list(LIKELIHOODS)


def _methods() -> list[str]:
    from varloss.samplers import METHODS

    return list(METHODS)


def _extractors() -> list[str]:
    from varloss.quality import extractor_names

    return extractor_names()


def _executors() -> list[str]:
    from varloss.pipelines.study.executors import EXECUTORS

    return list(EXECUTORS)


def _datasets() -> list[str]:
    return list(DATASETS)


def _presets() -> list[str]:
    from varloss.pipelines.study.spec import preset_names

    return preset_names()


# Imports inside these functions, not at the top: `varloss --help` and every command's own
# `--help` would otherwise import the whole library (1.6 s; see varloss/cli/__init__.py).
REGISTRIES: Registry[Callable[[], list[str]]] = Registry("help-text registry")
for _placeholder, _names in {
    "families": _families,
    "losses": _losses,
    "methods": _methods,
    "extractors": _extractors,
    "executors": _executors,
    "datasets": _datasets,
    "presets": _presets,
}.items():
    REGISTRIES.register(_placeholder, _names)


def registry_names(registry: str) -> str:
    """The names in `registry` (a key of REGISTRIES), comma-separated."""
    return ", ".join(REGISTRIES[registry]())


def fill_registry_names(text: str) -> str:
    """`text` with each `{registry}` placeholder replaced by that registry's names."""
    for registry in REGISTRIES:
        placeholder = "{" + registry + "}"
        if placeholder in text:
            text = text.replace(placeholder, registry_names(registry))
    return text
