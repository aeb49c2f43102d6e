"""Feature extractors for FID: Inception-v3 by path, varloss's domain classifiers, any Module.

Every extractor records what it is (`name`, `weights_hash`, `resize_mode`, `feature_dim`) so
every reported FID says which features produced it. Inputs are float images N x C x H x W in
[0, 1]; outputs are float64 N x d features.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
        from varloss._progress import progress_bar

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


def module_hash(module: nn.Module) -> str:
    """SHA-256 of a module's state_dict (names, shapes, dtypes, bytes): its weights identity."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


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
        self._hash = module_hash(module)
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
    from varloss.data import data_dir

    locations.append(data_dir() / "weights" / INCEPTION_WEIGHTS_NAME)
    return locations


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        digest = file_sha256(self.weights_path)
        if digest != INCEPTION_WEIGHTS_SHA256:
            raise InputError(
                f"Inception weights {str(self.weights_path)!r} have SHA-256 {digest}; expected "
                f"{INCEPTION_WEIGHTS_SHA256} ({INCEPTION_WEIGHTS_NAME})."
            )
        try:
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


# ---- factory ----


def get_extractor(
    features: str | nn.Module | FeatureExtractor = "domain",
    *,
    dataset: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    train: bool = True,
    progress: bool = True,
) -> FeatureExtractor:
    """An extractor by name ("domain", "inception"), or wrapping a user `nn.Module`.

    "domain" needs `dataset` (e.g. "mnist"); its classifier is trained on first use (with a
    progress bar) and cached, unless `train` is False, or loaded from `weights` (a folder or
    model.safetensors written by varloss).
    """
    if isinstance(features, FeatureExtractor):
        return features
    if isinstance(features, nn.Module):
        return ModuleExtractor(features, batch_size=batch_size, device=device)
    if not isinstance(features, str):
        raise InputError(
            f"features must be 'domain', 'inception' or an nn.Module, got {features!r}."
        )
    key = features.strip().lower()
    if key == "inception":
        return InceptionExtractor(weights, batch_size=min(batch_size, 64), device=device)
    if key == "domain":
        from varloss.quality.domain import DomainExtractor

        return DomainExtractor.for_dataset(
            dataset,
            weights=weights,
            batch_size=batch_size,
            device=device,
            train=train,
            progress=progress,
        )
    raise InputError(f"features must be 'domain' or 'inception', got {features!r}.")
