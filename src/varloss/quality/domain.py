"""Domain feature extractors: small classifiers trained by varloss on a data set's train split.

Inception-v3 features are the FID standard but need weights this machine cannot download and
are a poor fit for 28 x 28 digits. "FID (domain)" uses the penultimate activations of a small
classifier of the data set itself: LeNet-like for 1 x 28 x 28, a small ResNet for 32 x 32 and
64 x 64 colour images, a tiny CNN for smaller images (sklearn digits). Training is seeded and
deterministic on CPU; the classifier is cached as safetensors + JSON metadata (test accuracy,
seed, epochs, data hash) under the varloss cache, keyed by data set, architecture, seed, epochs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from filelock import FileLock
from safetensors.torch import load_file, save_file
from torch import nn

from varloss._hashing import sha256_arrays, sha256_file
from varloss._io import atomic_path, atomic_torch_save, atomic_write_json
from varloss._progress import progress_bar
from varloss.data import data_dir, info, load
from varloss.errors import InputError
from varloss.quality.extractors import FeatureExtractor

DOMAIN_FORMAT = 1


# ---- architectures: `features(x)` is the penultimate layer, `forward(x)` the class logits ----


class TinyCNN(nn.Module):
    """For small images (e.g. 1 x 8 x 8 digits): one conv block and a 64-d hidden layer."""

    def __init__(self, channels: int, size: int, classes: int, width: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 16, 3, padding=1)
        self.hidden = nn.Linear(16 * (size // 2) ** 2, width)
        self.head = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x - 0.5)), 2)
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LeNet(nn.Module):
    """LeNet-like for 28 x 28: two 5 x 5 conv + max-pool blocks, a 128-d hidden layer."""

    def __init__(self, channels: int, size: int, classes: int, width: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.hidden = nn.Linear(32 * (size // 4) ** 2, width)
        self.head = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x - 0.5)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


class SmallResNet(nn.Module):
    """A small ResNet for 32 x 32 / 64 x 64 colour images: 3 stages, global average pool (128-d)."""

    def __init__(self, channels: int, size: int, classes: int, width: int = 32) -> None:
        super().__init__()
        stride = 2 if size >= 64 else 1
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.stages = nn.Sequential(
            _Block(width, width, 1), _Block(width, 2 * width, 2), _Block(2 * width, 4 * width, 2)
        )
        self.head = nn.Linear(4 * width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x - 0.5)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "tiny-cnn": TinyCNN,
    "lenet": LeNet,
    "small-resnet": SmallResNet,
}


def architecture_for(image_shape: tuple[int, int, int]) -> str:
    """LeNet-like for gray 28-ish images, small ResNet for colour 32/64, tiny CNN below 16."""
    channels, height, width = image_shape
    if height != width:
        raise InputError(f"domain classifiers need square images, got {height} x {width}.")
    if height < 16:
        return "tiny-cnn"
    if channels == 1 and height <= 32:
        return "lenet"
    return "small-resnet"


@dataclass
class DomainSettings:
    """Everything that determines a trained domain classifier (its cache key)."""

    dataset: str
    architecture: str
    image_shape: tuple[int, int, int]
    classes: int
    seed: int = 0
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    limit: int | None = None

    def identity(self) -> dict[str, Any]:
        """The settings as JSON (recorded in meta.json and checkpoints)."""
        return {**asdict(self), "image_shape": list(self.image_shape)}

    def folder_name(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.dataset)
        limit = "" if self.limit is None else f"-n{self.limit}"
        return f"{safe}-{self.architecture}-s{self.seed}-e{self.epochs}-b{self.batch_size}{limit}"


DEFAULT_EPOCHS = {"tiny-cnn": 30, "lenet": 3, "small-resnet": 8}
# Written after every epoch while training, removed when the classifier is complete.
CHECKPOINT_FILE = "checkpoint.pt"
# Data sets that need more updates than their architecture's default to reach the target
# accuracy (Fashion-MNIST: 87.7% test accuracy after 3 epochs of batch 128, below our 88%).
DATASET_DEFAULTS: dict[str, dict[str, int]] = {"fashion-mnist": {"epochs": 4, "batch_size": 64}}
DEFAULT_BATCH_SIZE = 128


def default_epochs(dataset: str, architecture: str) -> int:
    return DATASET_DEFAULTS.get(dataset, {}).get("epochs", DEFAULT_EPOCHS[architecture])


def default_batch_size(dataset: str) -> int:
    return DATASET_DEFAULTS.get(dataset, {}).get("batch_size", DEFAULT_BATCH_SIZE)


def domain_dir() -> Path:
    """$VARLOSS_DATA_DIR/domain-classifiers, else the varloss user cache."""
    return data_dir() / "domain-classifiers"


def _dataset_name(dataset: str | None) -> str:
    if not dataset:
        raise InputError(
            "domain features need the data set the classifier is trained on (e.g. dataset='mnist')."
        )
    name = dataset.strip()
    base, sep, split = name.rpartition(":")
    if sep and split in ("train", "test", "valid") and base:
        name = base
    return name.lower() if ":" not in name else name


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            logits = model(images[start : start + batch])
            correct += int((logits.argmax(1) == labels[start : start + batch]).sum())
    return correct / max(images.shape[0], 1)


def _domain_settings(
    name: str,
    train: Any,
    seed: int,
    epochs: int | None,
    batch_size: int | None,
    lr: float,
    limit: int | None,
) -> DomainSettings:
    """The settings of the classifier of a labelled training set (defaults filled in)."""
    if train.labels is None:
        raise InputError(f"domain features need a labelled data set; {name!r} has no labels.")
    shape = tuple(int(s) for s in train.images.shape[1:])
    architecture = architecture_for(shape)  # type: ignore[arg-type]
    return DomainSettings(
        dataset=name,
        architecture=architecture,
        image_shape=shape,  # type: ignore[arg-type]
        classes=int(train.labels.max()) + 1,
        seed=seed,
        epochs=epochs if epochs is not None else default_epochs(name, architecture),
        batch_size=batch_size if batch_size is not None else default_batch_size(name),
        lr=lr,
        limit=limit,
    )


@torch.enable_grad()  # callers may be inside torch.no_grad() (e.g. an evaluation)
def train_domain_classifier(
    dataset: str,
    *,
    seed: int = 0,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    limit: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    loader: Callable[..., Any] | None = None,
) -> Path:
    """Train (deterministically, CPU) and cache a domain classifier; return its folder.

    The folder holds `model.safetensors` and `meta.json` (settings, test accuracy, data hash,
    weights hash). An existing complete folder is returned as is. A checkpoint is written after
    every epoch, so an interrupted training continues where it stopped, with the same result as
    an uninterrupted one.
    """
    name = _dataset_name(dataset)
    load_fn = loader or load
    train = load_fn(name, "train", limit=limit)
    settings = _domain_settings(name, train, seed, epochs, batch_size, lr, limit)
    folder = Path(out_dir) if out_dir is not None else domain_dir() / settings.folder_name()
    if (folder / "meta.json").exists() and (folder / "model.safetensors").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "meta.json").exists():
            return folder
        started = time.perf_counter()
        images, labels = train.images.to(torch.float32), train.labels.to(torch.int64)
        test = load_fn(name, "test")
        model, history = _fit(settings, images, labels, test, folder / CHECKPOINT_FILE, progress)
        with atomic_path(folder / "model.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        meta = {
            "format": DOMAIN_FORMAT,
            "settings": settings.identity(),
            "test_accuracy": _accuracy(model, test.images.float(), test.labels, 512),
            "train_accuracy": _accuracy(model, images, labels, 512),
            "history": history,
            "n_train": int(images.shape[0]),
            "n_test": int(test.images.shape[0]),
            "data_hash": sha256_arrays(images, labels),
            "weights_sha256": sha256_file(folder / "model.safetensors"),
            "train_seconds": round(time.perf_counter() - started, 1),
            "torch": torch.__version__,
        }
        atomic_write_json(folder / "meta.json", meta)
        (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
    return folder


def _fit(
    settings: DomainSettings,
    images: torch.Tensor,
    labels: torch.Tensor,
    test: Any,
    checkpoint_path: Path,
    progress: bool,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """(trained model in eval mode, per-epoch test accuracy), resuming from the checkpoint of
    the same settings if there is one, and checkpointing after every epoch."""
    channels, size = settings.image_shape[0], settings.image_shape[1]
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = ARCHITECTURES[settings.architecture](channels, size, settings.classes)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    history, first_epoch = _resume(checkpoint_path, settings, model, optimiser, generator)
    n, batch_size = images.shape[0], settings.batch_size
    steps = (n + batch_size - 1) // batch_size
    bar = progress_bar(
        total=settings.epochs * steps,
        initial=first_epoch * steps,
        desc=f"training the {settings.dataset} domain classifier ({settings.architecture}, "
        "once, then cached)",
        disable=not progress,
    )
    for epoch in range(first_epoch, settings.epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        accuracy = _accuracy(model, test.images.float(), test.labels, 512)
        history.append({"epoch": epoch + 1, "test_accuracy": accuracy})
        bar.set_postfix(test_accuracy=f"{accuracy:.4f}")
        state = {
            "settings": settings.identity(),
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "generator": generator.get_state(),
            "history": history,
        }
        atomic_torch_save(checkpoint_path, state)
    bar.close()
    return model.eval(), history


def _resume(
    checkpoint_path: Path,
    settings: DomainSettings,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    generator: torch.Generator,
) -> tuple[list[dict[str, Any]], int]:
    """(history, epochs done) from the checkpoint if it holds these settings, else ([], 0).

    The checkpoint is varloss's own cache: an unreadable one is started afresh, never trained on.
    """
    if not checkpoint_path.is_file():
        return [], 0
    try:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if state.get("settings") != settings.identity():  # other settings: start afresh
            return [], 0
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        return list(state["history"]), int(state["epoch"])
    except Exception:  # noqa: BLE001 - damaged (truncated, foreign): start afresh
        return [], 0


def load_domain_classifier(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, metadata) from a folder (or its model.safetensors) written above."""
    path = Path(path).expanduser()
    folder = path.parent if path.is_file() else path
    meta_path, weights_path = folder / "meta.json", folder / "model.safetensors"
    if not meta_path.exists() or not weights_path.exists():
        raise InputError(
            f"domain classifier {str(path)!r} must be a folder holding model.safetensors "
            "and meta.json."
        )
    meta = json.loads(meta_path.read_text())
    settings = meta["settings"]
    shape = settings["image_shape"]
    model = ARCHITECTURES[settings["architecture"]](shape[0], shape[1], settings["classes"])
    model.load_state_dict(load_file(str(weights_path)))
    return model.eval(), meta


def default_domain_folder(dataset: str, image_shape: tuple[int, int, int] | None = None) -> Path:
    """Where the default classifier of `dataset` is (or would be) cached."""
    name = _dataset_name(dataset)
    if image_shape is None:
        image_shape = tuple(info(name, fetch=False)["shape"])  # type: ignore[assignment]
    architecture = architecture_for(image_shape)  # type: ignore[arg-type]
    settings = DomainSettings(
        name,
        architecture,
        image_shape,
        10,
        epochs=default_epochs(name, architecture),
        batch_size=default_batch_size(name),
    )
    return domain_dir() / settings.folder_name()


def domain_extractor_available(dataset: str | None) -> bool:
    """True when the default domain classifier of `dataset` is cached (no training, no loading)."""
    try:
        folder = default_domain_folder(dataset or "")
    except Exception:
        return False
    return (folder / "meta.json").exists() and (folder / "model.safetensors").exists()


class DomainExtractor(FeatureExtractor):
    """Penultimate-layer features of a varloss domain classifier ("FID (domain)")."""

    resize_mode = "none (native resolution)"

    def __init__(
        self,
        model: nn.Module,
        meta: dict[str, Any],
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(batch_size, device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        self.name = f"domain:{meta['settings']['dataset']}:{meta['settings']['architecture']}"

    @classmethod
    def for_dataset(
        cls,
        dataset: str | None,
        *,
        weights: str | os.PathLike[str] | None = None,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
        train: bool = True,
        progress: bool = True,
    ) -> DomainExtractor:
        if weights is not None:
            model, meta = load_domain_classifier(weights)
            return cls(model, meta, batch_size, device)
        folder = default_domain_folder(dataset or "")
        if not (folder / "meta.json").exists():
            if not train:
                raise InputError(
                    f"no cached domain classifier for {dataset!r}; run `varloss fid` once with "
                    "domain features to train it."
                )
            folder = train_domain_classifier(dataset or "", progress=progress)
        model, meta = load_domain_classifier(folder)
        return cls(model, meta, batch_size, device)

    @property
    def weights_hash(self) -> str:
        return str(self.meta["weights_sha256"])

    @property
    def feature_dim(self) -> int:
        return int(self.model.head.in_features)

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "test_accuracy": self.meta.get("test_accuracy"),
            "seed": self.meta["settings"]["seed"],
            "epochs": self.meta["settings"]["epochs"],
            "data_hash": self.meta.get("data_hash"),
        }

    def _batch_features(self, batch: torch.Tensor) -> torch.Tensor:
        expected = tuple(self.meta["settings"]["image_shape"])
        if tuple(batch.shape[1:]) != expected:
            raise InputError(
                f"the {self.name} classifier takes images of shape {list(expected)}, "
                f"got {list(batch.shape[1:])}."
            )
        return self.model.features(batch)
