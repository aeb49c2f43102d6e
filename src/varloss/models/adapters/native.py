"""varloss's own models (a `varloss train` run folder or a `save_model` folder) as adapters.

The adapter hands every call to the `VAE` itself (`reconstruct` and `sample` included, so an
iterative family reconstructs along its own posterior path): measuring a varloss model through
its adapter gives the numbers `measure_model(load_model(folder))` gave before adapters existed.
"""

from __future__ import annotations

from typing import Any

import torch

from varloss.errors import InputError
from varloss.models.adapters.base import ModelAdapter
from varloss.models.base import VAE
from varloss.models.registry import load_model
from varloss.runs import CONFIG_FILE, MODEL_FILE, RunFolder

__all__ = ["VarlossAdapter", "load_varloss"]


class VarlossAdapter(ModelAdapter):
    """A varloss `VAE` (images and outputs in [0, 1], codes N x latent_dim, prior N(0, I))."""

    kind = "varloss"

    def __init__(
        self,
        model: VAE,
        *,
        source: str = "",
        dataset: str | None = None,
        dataset_limit: int | None = None,
    ) -> None:
        if not isinstance(model, VAE):
            raise InputError(f"expected a varloss VAE, got {type(model).__name__}.")
        super().__init__(
            model,
            source=source or f"<{model.family} model>",
            image_shape=model.image_shape,
            latent_shape=(model.latent_dim,),
            dataset=dataset,
            dataset_limit=dataset_limit,
        )
        self.vae = model

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode(x)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = x.to(device=self.device, dtype=self.dtype)
        if noise is None:
            return self.vae.reconstruct(x)
        return self.vae.reconstruct(x, noise)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.vae.sample(n, generator=generator, temperature=temperature, noise=noise)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "family": self.vae.family}


def _data_named_in(folder: RunFolder) -> tuple[str | None, int | None]:
    """The data set and image limit a train run's config.json names (train.dataset, .limit)."""
    config = folder.read_json(CONFIG_FILE)
    train = config.get("train") if isinstance(config, dict) else None
    if not isinstance(train, dict):
        return None, None
    dataset, limit = train.get("dataset"), train.get("limit")
    dataset = dataset if isinstance(dataset, str) and dataset else None
    return dataset, limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def load_varloss(path: str, *, device: str | torch.device = "cpu") -> VarlossAdapter:
    """A `varloss train` run folder or `save_model` folder as an adapter, on `device`."""
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise InputError(f"run folder {path} does not exist; expected a varloss model folder.")
    if not folder.exists(CONFIG_FILE) or not folder.exists(MODEL_FILE):
        raise InputError(
            f"run folder {path} has no saved model (expected {CONFIG_FILE} and {MODEL_FILE} "
            "written by `varloss train`)."
        )
    model = load_model(path, map_location=device)  # checks both files against the manifest
    dataset, limit = _data_named_in(folder)
    return VarlossAdapter(model, source=str(path), dataset=dataset, dataset_limit=limit)
