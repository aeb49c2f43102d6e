"""Feature extractors for FID: the base class, any Module, and Inception-v3 by path.

The domain classifiers' extractor lives in `varloss.quality.domain`; `varloss.quality.registry`
names them all (`get_extractor`, `register_extractor`).

Every extractor records what it is (`name`, `weights_hash`, `resize_mode`, `feature_dim`) so
every reported FID says which features produced it. Inputs are float images N x C x H x W in
[0, 1]; outputs are float64 N x d features.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from varloss._hashing import sha256_file, sha256_module
from varloss._progress import progress_bar
from varloss.data import data_dir
from varloss.errors import InputError

# torch-fidelity's FID Inception-v3 (the TF 2015-12-05 graph ported to PyTorch), as loaded by
# torchmetrics' FrechetInceptionDistance. torch hub names the file with its SHA-256 prefix.
INCEPTION_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_WEIGHTS_BYTES = 95_628_359
# The TF1-compatible bilinear resize to 299 x 299 of torch-fidelity (align_corners=False, no
# antialiasing), applied after quantising [0, 1] images to uint8 with round(255 x).
INCEPTION_RESIZE_MODE = "uint8-round, tf1-bilinear-299"


class FeatureExtractor:
    """Base class: `features(images)` -> float64 N x d, plus the record of what produced them."""

    name: str = "extractor"
    resize_mode: str = "none"

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
        """Yield float64 feature batches of N x C x H x W images in [0, 1] (bounded memory)."""
        starts = range(0, images.shape[0], self.batch_size)
        bar = progress_bar(
            starts, desc=f"features ({self.name})", disable=not progress, leave=False
        )
        for start in bar:
            batch = images[start : start + self.batch_size].to(self.device, torch.float32)
            with torch.no_grad():
                feats = self._batch_features(batch)
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


# ---- Inception ----


def _default_inception_locations() -> list[Path]:
    locations = []
    configured = os.environ.get("VARLOSS_INCEPTION_WEIGHTS")
    if configured:
        locations.append(Path(configured).expanduser())
    locations.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_NAME)
    locations.append(data_dir() / "weights" / INCEPTION_WEIGHTS_NAME)
    return locations


def find_inception_weights(weights: str | os.PathLike[str] | None = None) -> Path:
    """The Inception weights file: `weights`, $VARLOSS_INCEPTION_WEIGHTS, the torch hub cache
    (where torch-fidelity puts it), or the varloss cache; else InputError naming file and hash."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(
                f"Inception weights file {str(path)!r} does not exist; expected "
                f"{INCEPTION_WEIGHTS_NAME} (SHA-256 {INCEPTION_WEIGHTS_SHA256})."
            )
        return path
    locations = _default_inception_locations()
    for path in locations:
        if path.is_file():
            return path
    raise InputError(
        f"Inception features need the torch-fidelity weights file {INCEPTION_WEIGHTS_NAME} "
        f"(SHA-256 {INCEPTION_WEIGHTS_SHA256}), which cannot be downloaded here: pass "
        f"--weights PATH or place it at {locations[-1]} (or {locations[0]})."
    )


class InceptionExtractor(FeatureExtractor):
    """FID Inception-v3 pool3 features (2048-d) through torchmetrics / torch-fidelity.

    Grayscale images are repeated to RGB; images are quantised to uint8 (round(255 x)) and
    resized to 299 x 299 with torch-fidelity's TF1-compatible bilinear interpolation.
    """

    name = "inception-v3-compat"
    resize_mode = INCEPTION_RESIZE_MODE

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(batch_size, device)
        self.weights_path = find_inception_weights(weights)
        digest = sha256_file(self.weights_path)
        if digest != INCEPTION_WEIGHTS_SHA256:
            raise InputError(
                f"Inception weights {str(self.weights_path)!r} have SHA-256 {digest}; expected "
                f"{INCEPTION_WEIGHTS_SHA256} ({INCEPTION_WEIGHTS_NAME})."
            )
        try:  # here, not at the top: this module of torchmetrics needs the optional torch-fidelity
            from torchmetrics.image.fid import NoTrainInceptionV3
            from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
        except ImportError as error:  # pragma: no cover - torchmetrics is a core dependency
            raise InputError(f"torchmetrics cannot provide Inception-v3: {error}.") from None
        if not _TORCH_FIDELITY_AVAILABLE:
            raise InputError(
                "Inception features need the optional extra `pip install varloss[fid]` "
                "(torch-fidelity, which needs torchvision)."
            )
        self.model = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=str(self.weights_path),
            antialias=False,
        ).to(self.device)

    @property
    def weights_hash(self) -> str:
        return INCEPTION_WEIGHTS_SHA256

    @property
    def feature_dim(self) -> int:
        return 2048

    def _batch_features(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[1] == 1:
            batch = batch.repeat(1, 3, 1, 1)
        elif batch.shape[1] != 3:
            raise InputError(f"Inception features need 1 or 3 channels, got {batch.shape[1]}.")
        pixels = (batch.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        out = self.model(pixels)
        if isinstance(out, tuple | list):
            out = out[0]
        return out
