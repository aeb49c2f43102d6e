"""Domain feature extractors: small classifiers trained by varloss on a data set's train split.

Inception-v3 features are the FID standard but need weights this machine cannot download and
are a poor fit for 28 x 28 digits. "FID (domain)" uses the penultimate activations of a small
classifier of the data set itself (`domain_classifiers`): LeNet-like for 1 x 28 x 28, a small
ResNet for 32 x 32 and 64 x 64 colour images, a tiny CNN for smaller images (sklearn digits).
Training is seeded and deterministic on CPU; the classifier is cached as safetensors + JSON
metadata (test accuracy, seed, epochs, data hash) under the varloss cache, keyed by data set,
architecture, seed, epochs.
A cached classifier is a run-folder-layer folder (`varloss.runs.RunFolder`): written under its
lock, `manifest.json` sealed last over the weights and `meta.json`, every read checked against it;
a damaged cached classifier is named in one sentence and trained again. Folders written before
the manifest are still read, their weights checked against `meta.json`'s `weights_sha256`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from varloss._hashing import sha256_arrays, sha256_file
from varloss._progress import progress_bar, say
from varloss.data import data_dir, info, load
from varloss.errors import InputError
from varloss.quality.domain_classifiers import ARCHITECTURES, architecture_for
from varloss.quality.extractors import FeatureExtractor
from varloss.runs import MODEL_FILE, RunFolder

DOMAIN_FORMAT = 1


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
META_FILE = "meta.json"  # settings, accuracies, data and weights hashes; beside MODEL_FILE
# A second process waits this long for the one training the same classifier.
LOCK_WAIT_S = 3600.0
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
            "domain features need the data set their classifier is trained on (`varloss fid "
            "--dataset mnist`, dataset='mnist' from Python); for images of no known data set use "
            "the Inception features (`--features inception`, or `--fid inception` for measure)."
        )
    name = dataset.strip()
    base, sep, split = name.rpartition(":")
    if sep and split in ("train", "test", "valid") and base:
        name = base
    return name.lower() if ":" not in name else name


def no_labels_sentence(dataset: str | None, switch: str) -> str:
    """The one wording of "this set has no labels, so it has no domain classifier" (the error of
    `varloss fid`/`measure` and the FID reason of the pipelines); `switch` says which option
    gives the Inception FID instead where the sentence is read."""
    return (
        f"{dataset!r} has no labels, so varloss has no domain classifier for it; {switch} for "
        "the FID of the papers (fetch its weights once with `varloss weights fetch inception`)"
    )


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
        raise InputError(
            no_labels_sentence(
                name, "use --features inception (`varloss measure`: --fid inception)"
            )
            + "."
        )
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
    folder = RunFolder(out_dir if out_dir is not None else domain_dir() / settings.folder_name())
    if _complete(folder):
        return folder.path
    with folder.lock(wait=LOCK_WAIT_S):
        if _complete(folder, repair=True):  # another process may have trained it meanwhile
            return folder.path
        started = time.perf_counter()
        images, labels = train.images.to(torch.float32), train.labels.to(torch.int64)
        test = load_fn(name, "test")
        model, history = _fit(settings, images, labels, test, folder, progress)
        folder.write_tensors(MODEL_FILE, model.state_dict(), record=False)
        meta = {
            "format": DOMAIN_FORMAT,
            "settings": settings.identity(),
            "test_accuracy": _accuracy(model, test.images.float(), test.labels, 512),
            "train_accuracy": _accuracy(model, images, labels, 512),
            "history": history,
            "n_train": int(images.shape[0]),
            "n_test": int(test.images.shape[0]),
            "data_hash": sha256_arrays(images, labels),
            "weights_sha256": sha256_file(folder.file(MODEL_FILE)),
            "train_seconds": round(time.perf_counter() - started, 1),
            "torch": torch.__version__,
        }
        folder.write_json(META_FILE, meta, record=False)
        folder.unlink(CHECKPOINT_FILE)
        folder.seal([MODEL_FILE, META_FILE])  # last: the classifier is complete
    return folder.path


def _complete(folder: RunFolder, *, repair: bool = False) -> bool:
    """True when `folder` holds a complete classifier whose files pass their checks (against the
    manifest; without one, the weights against meta.json's weights_sha256). A damaged one is
    False; with `repair` (the caller holds the lock) it is named in one sentence and cleared."""
    try:
        return _checked(folder)
    except InputError as error:
        if repair:
            say(f"{str(error).rstrip('.')}: training the domain classifier again", "fid")
            folder.clear()
        return False


def _checked(folder: RunFolder, advice: str | None = None) -> bool:
    """True when the classifier's files are there and pass their checks, False when incomplete;
    InputError naming a damaged file (ending with `advice`)."""
    what_to_do = advice or "it is trained again"
    if folder.manifest() is not None:
        return folder.verify(MODEL_FILE, advice=what_to_do) and folder.verify(
            META_FILE, advice=what_to_do
        )
    if not (folder.exists(MODEL_FILE) and folder.exists(META_FILE)):
        return False
    # written before the manifest existed: meta.json recorded the weights' digest
    if sha256_file(folder.file(MODEL_FILE)) != folder.read_json(META_FILE).get("weights_sha256"):
        raise InputError(
            f"{folder.file(MODEL_FILE)} is damaged (its SHA-256 does not match the weights_sha256 "
            f"of {META_FILE}); {what_to_do}."
        )
    return True


def _fit(
    settings: DomainSettings,
    images: torch.Tensor,
    labels: torch.Tensor,
    test: Any,
    folder: RunFolder,
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
    history, first_epoch = _resume(folder, settings, model, optimiser, generator)
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
        folder.write_torch(CHECKPOINT_FILE, state, record=False)
    bar.close()
    return model.eval(), history


def _resume(
    folder: RunFolder,
    settings: DomainSettings,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    generator: torch.Generator,
) -> tuple[list[dict[str, Any]], int]:
    """(history, epochs done) from the checkpoint if it holds these settings, else ([], 0).

    The checkpoint is varloss's own cache: an unreadable one is started afresh, never trained on.
    """
    if not folder.exists(CHECKPOINT_FILE):
        return [], 0
    try:
        state = folder.read_torch(CHECKPOINT_FILE)
        if state.get("settings") != settings.identity():  # other settings: start afresh
            return [], 0
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        return list(state["history"]), int(state["epoch"])
    except Exception:  # noqa: BLE001 - damaged (truncated, foreign): start afresh
        return [], 0


def load_domain_classifier(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, metadata) from a folder (or its model.safetensors) written above,
    its files checked first: a damaged one is an InputError naming it."""
    path = Path(path).expanduser()
    folder = RunFolder(path.parent if path.is_file() else path)
    if not folder.exists(META_FILE) or not folder.exists(MODEL_FILE):
        raise InputError(
            f"domain classifier {str(path)!r} must be a folder holding {MODEL_FILE} "
            f"and {META_FILE}."
        )
    advice = "delete the folder to train it again, or pass another classifier"
    _checked(folder, advice)
    meta = folder.read_json(META_FILE, advice=advice)
    settings = meta["settings"]
    shape = settings["image_shape"]
    model = ARCHITECTURES[settings["architecture"]](shape[0], shape[1], settings["classes"])
    model.load_state_dict(folder.read_tensors(MODEL_FILE, advice=advice))
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
    return _complete(RunFolder(folder))


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
        if not _complete(RunFolder(folder)):  # absent, incomplete or damaged
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
