"""VAE model zoo: a common interface (`VAE`), one file per family, and a registry.

Families: dense (Chollet's Keras VAE by default), conv, resnet, draw (Gregor et al. 2015) and
convdraw (GQN-like convolutional DRAW), the last two over one iterative base
(`models.iterative`: the loop they share). `create_model`, `save_model` and `load_model` are the
entry points; `MODEL_FAMILIES` maps family names to classes; `parse_settings` and
`check_hyper` read hyper-parameters and check them against a family's config types. Your own
families register with `@register` and are found through `load_plugins` (`models.registry`).
"""

from varloss.models.base import VAE, LossTerms, ModelConfig
from varloss.models.hyper import check_hyper, parse_settings
from varloss.models.registry import (
    MODEL_FAMILIES,
    PLUGINS_ENV,
    create_model,
    load_model,
    load_plugins,
    register,
    save_model,
)

# Importing the family modules registers them.
from varloss.models import conv, convdraw, dense, draw, resnet  # noqa: E402, F401  isort: skip

__all__ = [
    "MODEL_FAMILIES",
    "PLUGINS_ENV",
    "VAE",
    "LossTerms",
    "ModelConfig",
    "check_hyper",
    "create_model",
    "load_model",
    "load_plugins",
    "parse_settings",
    "register",
    "save_model",
]
