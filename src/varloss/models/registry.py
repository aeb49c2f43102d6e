"""Family name -> class registry, `create_model`, and saving/loading a model as a folder.

A saved model is a folder with `config.json` (`{"family": ..., "model": {...config...}, ...extra}`)
and `model.safetensors` (the full state dict, buffers included: the balanced rule's running MSE
and a learned gamma travel with the weights). No pickles anywhere.

Your own architectures: subclass `ModelConfig` and `VAE`, decorate the class with `@register`,
and make its module known to varloss by one of
- an installed package's entry point in the group `varloss.models`
  (`[project.entry-points."varloss.models"] mine = "my_package.my_models"`),
- the environment variable `VARLOSS_PLUGINS` (module names or `.py` files, comma-separated),
- `varloss train --plugin MODULE` or a study spec's `plugins:` list.
They are imported the first time a family name is not found; `varloss train --family mine`,
`varloss study` and `load_model` then work as for the built-in families.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from varloss._registry import Registry
from varloss.errors import InputError
from varloss.models.base import VAE
from varloss.models.hyper import check_hyper
from varloss.runs import CONFIG_FILE, MODEL_FILE, RunFolder

__all__ = [
    "MODEL_FAMILIES",
    "PLUGIN_ENTRY_POINTS",
    "PLUGINS_ENV",
    "create_model",
    "load_model",
    "load_plugins",
    "register",
    "save_model",
]

PLUGIN_ENTRY_POINTS = "varloss.models"
PLUGINS_ENV = "VARLOSS_PLUGINS"

MODEL_FAMILIES: Registry[type[VAE]] = Registry(
    "model family",
    hint=f"your own families: register them and name their module in {PLUGINS_ENV} or --plugin",
)


def register(cls: type[VAE]) -> type[VAE]:
    """Class decorator: add a family to MODEL_FAMILIES under its config's `family` name (the
    registries' one duplicate policy: a name another class holds is refused)."""
    name = cls.config_class.family
    if not name:
        raise ValueError(f"{cls.__name__}.config_class has no family name")
    return MODEL_FAMILIES.register(name, cls)


_imported_plugins: set[str] = set()
_entry_points_loaded = False


def _import_plugin(name: str) -> None:
    """Import a module by name, or a `.py` file by path (registered under its stem)."""
    if name in _imported_plugins:
        return
    try:
        if name.endswith(".py"):
            path = Path(name)
            if not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            module_name = f"varloss_plugin_{path.stem}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[module_name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - the plugin's own error, named once
        raise InputError(
            f"model plugin {name!r} could not be imported ({type(error).__name__}: {error})."
        ) from None
    _imported_plugins.add(name)


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import the modules that register your own families: `modules`, those named in
    `VARLOSS_PLUGINS` and (once) the `varloss.models` entry points. Returns what was imported."""
    global _entry_points_loaded
    names = [m.strip() for m in modules if m and m.strip()]
    names += [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for name in names:
        _import_plugin(name)
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for entry in entry_points(group=PLUGIN_ENTRY_POINTS):
            try:
                entry.load()
            except Exception as error:  # noqa: BLE001
                raise InputError(
                    f"model plugin entry point {entry.name!r} ({entry.value}) could not be "
                    f"loaded ({type(error).__name__}: {error})."
                ) from None
            names.append(entry.value)
    return names


def _family_class(family: str) -> type[VAE]:
    if family not in MODEL_FAMILIES:
        load_plugins()
    return MODEL_FAMILIES[family]  # an unknown name: one sentence, with the plugin hint


def create_model(
    family: str,
    image_shape: tuple[int, int, int] | list[int],
    latent_dim: int,
    loss: str | None = None,
    **hyper: Any,
) -> VAE:
    """Build a model of `family` for images C x H x W; `loss=None` is the family's default.

    `hyper` are the family's config fields (e.g. `hidden_sizes` for dense, `steps` for draw) and
    the shared `kl_weight` / `loss_options`; unknown names and values of the wrong type raise
    InputError (`check_hyper`: a list for a tuple field is fine, "64" for one is not).
    """
    cls = _family_class(family)
    config_class = cls.config_class
    values = check_hyper(config_class, hyper, family)  # names and types, lists become tuples
    config = config_class(
        image_shape=tuple(image_shape), latent_dim=latent_dim, loss=loss or "", **values
    )
    return cls(config)


def save_model(model: VAE, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `config.json` and `model.safetensors` into `directory` (atomically, file by file;
    their SHA-256 digests go into the folder's manifest, which `load_model` checks)."""
    extra = dict(extra or {})
    clash = sorted({"family", "model"} & set(extra))
    if clash:
        raise InputError(f"extra keys {clash} are reserved in config.json; use other names.")
    folder = RunFolder(directory).create()
    folder.write_tensors(MODEL_FILE, model.state_dict(), {"family": model.config.family})
    config = {"family": model.config.family, "model": model.config.to_dict(), **extra}
    folder.write_json(CONFIG_FILE, config)
    return folder.path


def load_model(directory: str | Path, map_location: str | torch.device = "cpu") -> VAE:
    """Rebuild a model saved by `save_model`; outputs are identical to the saved model's.

    Both files are checked against the folder's manifest first (when it has one): a damaged or
    truncated file is an InputError naming it and what to do, never a traceback.
    """
    folder = RunFolder(directory)
    if not folder.path.is_dir():
        raise InputError(f"model folder {folder.path} does not exist; expected a saved model.")
    for name in (CONFIG_FILE, MODEL_FILE):
        if not folder.exists(name):
            raise InputError(f"model folder {folder.path} has no {name}; expected a saved model.")
        folder.verify(name)
    saved = folder.read_json(CONFIG_FILE)
    try:
        family = saved["family"]
        settings = saved["model"]
    except (KeyError, TypeError) as error:
        raise InputError(
            f"{folder.file(CONFIG_FILE)} is not a varloss model config (needs 'family' and "
            "'model' keys)."
        ) from error
    cls = _family_class(family)
    model = cls(cls.config_class.from_dict(settings))
    state = folder.read_tensors(MODEL_FILE, map_location)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        reason = str(error).splitlines()[0][:160]
        raise InputError(
            f"{folder.file(MODEL_FILE)} does not hold the weights of the model its config.json "
            f"describes ({reason}); save the model again."
        ) from None
    model.to(map_location)
    model.eval()
    return model
