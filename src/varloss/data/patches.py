"""Patches of natural colour photographs that ship inside installed packages (the `patches` set).

CIFAR-10 and CelebA cannot be had without the web; a few real colour photographs can: the ones
scikit-image and scikit-learn carry in their wheels for their examples. This module cuts them
into square patches: for each split, an equal share of the split's count from every photograph
of that split (so a large photograph does not dominate), each patch a uniformly random crop,
mirrored left to right with probability 1/2, all drawn from one seeded numpy generator per
split; the split is then shuffled by the same generator, so that its first N patches mix every
photograph. Train and test come from different photographs. Every photograph's file is checked
against its pinned SHA-256 before it is decoded: another package version with other pixels is
refused, not silently turned into another data set.

The photographs are found through `importlib.util.find_spec`, which locates a package's folder
without importing it (importing scikit-image or scikit-learn takes seconds).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from varloss._hashing import sha256_file
from varloss.errors import InputError

__all__ = [
    "Photograph",
    "SPLIT_STREAMS",
    "missing_packages",
    "photograph_file",
    "photograph_patches",
]

SPLIT_STREAMS = {"train": 0, "test": 1}
"""The index of each split's random stream: the generator of a split is seeded by (seed, index)."""


@dataclass(frozen=True)
class Photograph:
    """One source photograph: a file inside an installed package, its split and its pin."""

    name: str
    package: str  # the importable package whose folder holds the file (e.g. "skimage")
    path: str  # the file, relative to that folder
    split: str
    sha256: str
    extra: str = ""  # the varloss extra that installs the package ("" for a dependency)

    def describe(self) -> dict[str, str]:
        """What `varloss data info` shows of it (JSON-safe)."""
        return {"name": self.name, "file": f"{self.package}/{self.path}", "sha256": self.sha256}


def _package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it; None when absent."""
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(folders[0]) if folders else None


def missing_packages(photographs: Sequence[Photograph]) -> list[str]:
    """The packages of `photographs` that are not installed (nothing is read or imported)."""
    packages = dict.fromkeys(p.package for p in photographs)
    return [package for package in packages if _package_folder(package) is None]


def photograph_file(photograph: Photograph, dataset: str) -> Path:
    """The verified path of a photograph's file, or an InputError saying what to install."""
    folder = _package_folder(photograph.package)
    if folder is None:
        install = (
            f"pip install 'varloss[{photograph.extra}]'"
            if photograph.extra
            else f"install {photograph.package}"
        )
        raise InputError(
            f"Data set {dataset!r} is cut from photographs shipped with the {photograph.package} "
            f"package, which is not installed; {install}."
        )
    path = folder / photograph.path
    if not path.is_file():
        raise InputError(
            f"Data set {dataset!r} needs {photograph.package}/{photograph.path}, which this "
            f"installation of {photograph.package} does not ship; reinstall "
            f"{photograph.package} from its wheel."
        )
    digest = sha256_file(path)
    if digest != photograph.sha256:
        raise InputError(
            f"Photograph {path} of data set {dataset!r} has SHA-256 {digest[:16]}..., not the "
            f"pinned {photograph.sha256[:16]}...: this {photograph.package} ships another file, "
            "so its patches would not be the recorded data set."
        )
    return path


def _pixels(path: Path) -> np.ndarray:
    """The photograph as uint8 H x W x 3 (RGB)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _shares(count: int, parts: int) -> list[int]:
    """`count` split into `parts` whole numbers as equal as possible (the first ones larger)."""
    base, extra = divmod(count, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def photograph_patches(
    photographs: Sequence[Photograph],
    split: str,
    count: int,
    side: int,
    seed: int,
    dataset: str,
) -> np.ndarray:
    """`count` uint8 patches, N x 3 x side x side, of the photographs of `split`.

    Deterministic for a given seed: the generator of the split is
    `numpy.random.default_rng((seed, SPLIT_STREAMS[split]))`, and it draws, photograph by
    photograph in the order given, the top rows, then the left columns, then the flips of that
    photograph's share, and finally the permutation that shuffles the split.
    """
    chosen = [p for p in photographs if p.split == split]
    if not chosen:
        raise InputError(f"Data set {dataset!r} has no photographs for split {split!r}.")
    generator = np.random.default_rng((seed, SPLIT_STREAMS[split]))
    parts = []
    for photograph, share in zip(chosen, _shares(count, len(chosen)), strict=True):
        pixels = _pixels(photograph_file(photograph, dataset))
        height, width, _ = pixels.shape
        if height < side or width < side:
            raise InputError(
                f"Photograph {photograph.name} of data set {dataset!r} is {height} x {width}, "
                f"smaller than its {side} x {side} patches."
            )
        tops = generator.integers(0, height - side + 1, size=share)
        lefts = generator.integers(0, width - side + 1, size=share)
        flips = generator.random(share) < 0.5
        # every side x side window: (H - side + 1) x (W - side + 1) x 3 x side x side, a view
        windows = np.lib.stride_tricks.sliding_window_view(pixels, (side, side), axis=(0, 1))
        patches = windows[tops, lefts]  # a copy, N x 3 x side x side
        patches[flips] = patches[flips][..., ::-1]  # mirrored left to right
        parts.append(patches)
    images = np.concatenate(parts)
    return np.ascontiguousarray(images[generator.permutation(len(images))])
