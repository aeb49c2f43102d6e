"""Feature extractors for FID: the base class and any Module.

The domain classifiers' extractor lives in `varloss.quality.domain`, the FID Inception-v3 in
`varloss.quality.inception`; `varloss.quality.registry` names them all (`get_extractor`,
`register_extractor`).

Every extractor records what it is (`name`, `weights_hash`, `resize_mode`, `feature_dim`) so
every reported FID says which features produced it. Inputs are float images N x C x H x W in
[0, 1]; outputs are float64 N x d features.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from varloss._hashing import sha256_module
from varloss._progress import progress_bar


class FeatureExtractor:
    """Base class: `features(images)` -> float64 N x d, plus the record of what produced them."""

    name: str = "extractor"
    resize_mode: str = "none"
    # the resize a user chose among several (`InceptionExtractor`'s RESIZES); None: no choice
    resize: str | None = None

    def __init__(self, batch_size: int = 256, device: str | torch.device = "cpu") -> None:
        self.batch_size = int(batch_size)
        self.device = torch.device(device)

    @property
    def weights_hash(self) -> str | None:
        return None

    @property
    def feature_dim(self) -> int | None:
        return None

    def info(self) -> dict[str, Any]:
        """JSON-safe description recorded next to every number these features produce."""
        return {
            "name": self.name,
            "weights_hash": self.weights_hash,
            "resize_mode": self.resize_mode,
            "feature_dim": self.feature_dim,
        }

    def _batch_features(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def iter_features(self, images: torch.Tensor, progress: bool = False) -> Iterator[torch.Tensor]:
        """Yield float64 feature batches of N x C x H x W images in [0, 1] (bounded memory); with
        `progress`, a bar counting images (its rate is images/s)."""
        bar = progress_bar(
            total=images.shape[0],
            desc=f"features ({self.name})",
            unit="img",
            disable=not progress,
            leave=False,
        )
        with bar:
            for start in range(0, images.shape[0], self.batch_size):
                batch = images[start : start + self.batch_size].to(self.device, torch.float32)
                with torch.no_grad():
                    feats = self._batch_features(batch)
                bar.update(batch.shape[0])
                yield feats.reshape(feats.shape[0], -1).to("cpu", torch.float64)

    def features(self, images: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """All features of `images` as one float64 N x d tensor."""
        out = list(self.iter_features(images, progress))
        if not out:
            return torch.zeros(0, self.feature_dim or 0, dtype=torch.float64)
        return torch.cat(out)


class ModuleExtractor(FeatureExtractor):
    """Any `torch.nn.Module` mapping N x C x H x W images in [0, 1] to N x ... features."""

    def __init__(
        self,
        module: nn.Module,
        name: str | None = None,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(batch_size, device)
        self.module = module.to(self.device).eval()
        self.name = name or f"module:{type(module).__name__}"
        self._hash = sha256_module(module)
        self._dim: int | None = None

    @property
    def weights_hash(self) -> str:
        return self._hash

    @property
    def feature_dim(self) -> int | None:
        return self._dim

    def _batch_features(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.module(batch)
        if isinstance(out, tuple | list):
            out = out[0]
        self._dim = int(out[0].numel())
        return out
