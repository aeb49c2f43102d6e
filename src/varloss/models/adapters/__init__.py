"""Model adapters: pythae, diffusers and varloss models behind one small interface.

    from varloss.models.adapters import load_adapter
    model = load_adapter("pythae:path/to/final_model")      # or "diffusers:path/to/vae"
    mu, logvar = model.encode(images)                        # images in [0, 1]
    report = measure_model(model, "mnist:test")              # varloss.variance

`ModelAdapter` is the interface (`base.py`), `load_adapter` the registry by prefix
(`registry.py`); one module per kind. pythae and diffusers are optional dependencies (the
`adapters` extra), imported only when a model of theirs is loaded.
"""

from varloss.models.adapters.base import AdapterLoader, ModelAdapter
from varloss.models.adapters.diffusers import DiffusersAdapter
from varloss.models.adapters.native import VarlossAdapter
from varloss.models.adapters.pythae import PythaeAdapter
from varloss.models.adapters.registry import (
    ADAPTERS,
    DEFAULT_PREFIX,
    as_adapter,
    load_adapter,
    register_adapter,
    resolve_device,
    split_spec,
)

__all__ = [
    "ADAPTERS",
    "DEFAULT_PREFIX",
    "AdapterLoader",
    "DiffusersAdapter",
    "ModelAdapter",
    "PythaeAdapter",
    "VarlossAdapter",
    "as_adapter",
    "load_adapter",
    "register_adapter",
    "resolve_device",
    "split_spec",
]
