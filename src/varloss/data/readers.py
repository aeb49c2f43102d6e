"""The file readers by suffix (`READERS`): array files and image files, and the one suffix list.

    array = read_array_file(Path("samples.npz"), "x", "generated")    # file.npz:x
    register_reader(".h5", my_reader)                                 # (path, key, name) -> array

Files hold raw arrays (not yet scaled); `varloss.data.convert.to_images` turns them into
images. A file with several arrays is read as `file:key`; without a key its only array is read,
or, for data sets saved with labels, the array named `images` (`pick_key` is the one rule).
Image folders are decoded file by file in name order: grayscale when every image is grayscale,
RGB otherwise (alpha dropped), 16-bit grayscale scaled to 8 bits.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from varloss._registry import Registry
from varloss.data.convert import shape_text
from varloss.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
"""The suffixes read as images, in files and in folders (compared in lower case)."""

DEFAULT_ARRAY_KEY = "images"
"""The array read from a multi-array file when no key is named (data sets saved with labels)."""

Reader = Callable[[Path, "str | None", str], Any]
"""(path, key or None, input name) -> raw array or tensor, N first."""

READERS: Registry[Reader] = Registry("file suffix")


def register_reader(
    suffixes: str | Sequence[str], reader: Reader, *, replace: bool = False
) -> None:
    """Make files with `suffixes` (e.g. ".h5") readable by every varloss command. A suffix
    another reader holds is refused unless `replace` (the registries' one duplicate policy)."""
    suffixes = [suffixes] if isinstance(suffixes, str) else list(suffixes)
    for suffix in suffixes:
        if not (isinstance(suffix, str) and suffix.startswith(".") and len(suffix) > 1):
            raise ValueError(f"reader suffix must look like '.npy', got {suffix!r}")
    if not callable(reader):
        raise TypeError(f"reader for {', '.join(suffixes)} must be callable, got {reader!r}")
    READERS.register_all([suffix.lower() for suffix in suffixes], reader, replace=replace)


def split_key(text: str) -> tuple[Path, str | None]:
    """`file.npz:key` -> (Path("file.npz"), "key"); an existing path or one without ':' has no
    key. The key is whatever follows the last ':' (so Windows drive letters survive)."""
    path = Path(text).expanduser()
    if path.exists() or ":" not in text:
        return path, None
    head, key = text.rsplit(":", 1)
    if not head or not key or "/" in key or "\\" in key:
        return path, None
    return Path(head).expanduser(), key


def pick_key(keys: list[str], key: str | None, path: Path, name: str) -> str:
    """The one rule for choosing the array of a multi-array file (npz, safetensors, torch dict):
    the named key; else the only array; else the array named `images`."""
    if key is None:
        if len(keys) == 1:
            return keys[0]
        if DEFAULT_ARRAY_KEY in keys:
            return DEFAULT_ARRAY_KEY
        raise InputError(
            f"{name} file {path} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
            f"name one as {path}:KEY."
        )
    if key not in keys:
        raise InputError(f"{name} file {path} has no array {key!r}; it holds: {', '.join(keys)}.")
    return key


def read_array_file(path: Path, key: str | None, name: str = "input") -> Any:
    """The raw array (memory-mapped where the format allows) of a file, by its suffix."""
    suffix = path.suffix.lower()
    reader = READERS.get(suffix)
    if reader is None:
        known = ", ".join(sorted(s for s in READERS if s not in IMAGE_SUFFIXES))
        raise InputError(
            f"{name} path {path} is not an array file ({known}), an image or an image folder "
            f"(got suffix {suffix or 'none'!r})."
        )
    return reader(path, key, name)


# ---- array formats ----

_OBJECTS = (
    "holds Python objects (an object array, which only a pickle can restore), not numbers; "
    "varloss never unpickles data: save a numeric array instead, e.g. np.asarray(x, float)"
)


def _npy_holds_objects(path: Path) -> bool:
    """Whether an .npy file's header declares Python objects (read without loading them)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except Exception:  # noqa: BLE001 - not a readable .npy: the caller's own sentence says so
        return False
    return bool(dtype.hasobject)


def _read_npy(path: Path, key: str | None, name: str) -> np.ndarray:
    if key is not None:
        raise InputError(f"{name} file {path} holds one array, not named arrays; drop :{key}.")
    if _npy_holds_objects(path):
        raise InputError(f"{name} file {path} {_OBJECTS}.")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any reader failure is a user-facing input problem
        raise InputError(f"{name} file {path} could not be read as .npy ({error}).") from None


def npz_member(archive: Any, key: str, path: Path, name: str) -> np.ndarray:
    """Array `key` of an open .npz archive (np.load, allow_pickle=False), every failure (object
    arrays, damaged members) one InputError naming `path:key`. The one way varloss reads .npz
    members, so `npz:`, `file:key` and the data-set readers say the same."""
    try:
        return archive[key]
    except ValueError as error:
        if "Object arrays" in str(error):
            raise InputError(f"{name} array {path}:{key} {_OBJECTS}.") from None
        raise InputError(f"{name} array {path}:{key} could not be read ({error}).") from None
    except Exception as error:  # noqa: BLE001
        raise InputError(f"{name} array {path}:{key} could not be read ({error}).") from None


def _read_npz(path: Path, key: str | None, name: str) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001
        raise InputError(f"{name} file {path} could not be read as .npz ({error}).") from None
    with archive:
        key = pick_key(list(archive.files), key, path, name)
        return npz_member(archive, key, path, name)


def npz_keys(path: Path, name: str = "input") -> list[str]:
    """The array names of an .npz file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except Exception as error:  # noqa: BLE001
        raise InputError(f"{name} file {path} could not be read as .npz ({error}).") from None


def _read_safetensors(path: Path, key: str | None, name: str) -> torch.Tensor:
    try:
        with safe_open(str(path), framework="pt") as tensors:
            key = pick_key(list(tensors.keys()), key, path, name)
            return tensors.get_tensor(key)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001
        raise InputError(
            f"{name} file {path} could not be read as .safetensors ({error})."
        ) from None


def _read_torch(path: Path, key: str | None, name: str) -> torch.Tensor:
    """A tensor saved with torch.save, or one tensor of a saved dict; loaded with
    `weights_only=True` (no code runs) and memory-mapped."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:  # torch's long advice to turn weights_only off: never that
        raise InputError(
            f"{name} file {path} holds Python objects other than tensors, numbers and dicts; "
            "varloss loads only tensors from .pt files and never runs code stored in one: save "
            "a tensor (or a dict of tensors) with torch.save."
        ) from None
    except Exception as error:  # noqa: BLE001
        raise InputError(
            f"{name} file {path} could not be read as a torch-saved tensor ({error})."
        ) from None
    if isinstance(saved, dict):
        tensors = {str(k): v for k, v in saved.items() if isinstance(v, torch.Tensor)}
        saved = tensors[pick_key(list(tensors), key, path, name)]
    elif key is not None:
        raise InputError(f"{name} file {path} holds one tensor, not named arrays; drop :{key}.")
    if not isinstance(saved, torch.Tensor):
        raise InputError(
            f"{name} file {path} holds a {type(saved).__name__}; expected a tensor or a dict of "
            "tensors."
        )
    return saved


# ---- images ----

_GRAY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F", "P")


def _is_gray(image: Any) -> bool:
    if image.mode not in _GRAY_MODES:
        return False
    if image.mode != "P":
        return True
    rgb = np.asarray(image.convert("RGB"))
    return bool(
        np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    )


def _gray_uint8(image: Any) -> np.ndarray:
    if image.mode.startswith("I"):  # 16- or 32-bit integers: scale the 16-bit range to 8 bits
        pixels = np.asarray(image, dtype=np.float64) / 65535.0 * 255.0
        return np.clip(pixels, 0, 255).round().astype(np.uint8)
    if image.mode == "F":
        return (np.clip(np.asarray(image, dtype=np.float64), 0, 1) * 255).round().astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


@contextlib.contextmanager
def open_image(path: Any, name: str = "input", label: str | None = None) -> Iterator[Any]:
    """`PIL.Image.open(path)`, every failure one InputError naming the file: undecodable files,
    and decompression bombs (more pixels than `PIL.Image.MAX_IMAGE_PIXELS`: PIL's warning is
    taken as the refusal it announces, since such an image is no model's input). `path` may be
    an open binary file (an image inside an archive), named in messages by `label`."""
    shown = label if label is not None else path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{name} image {shown} declares more than {Image.MAX_IMAGE_PIXELS} pixels "
            "(PIL's decompression-bomb limit); expected an image of ordinary size."
        ) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{name} image {shown} could not be decoded ({error}).") from None


def decode_image(path: Path, name: str = "input", gray: bool | None = None) -> np.ndarray:
    """One image file as uint8 C x H x W: 1 channel when `gray` (default: when it is grayscale),
    else RGB."""
    with open_image(path, name) as image:
        if gray is None:
            gray = _is_gray(image)
        if gray:
            return _gray_uint8(image)[None]
        return np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def _read_image(path: Path, key: str | None, name: str) -> np.ndarray:
    if key is not None:
        raise InputError(f"{name} image {path} has no named arrays; drop :{key}.")
    return decode_image(path, name)[None]


def image_files(folder: Path, name: str = "input") -> list[Path]:
    """The image files of a folder (IMAGE_SUFFIXES), sorted by name; InputError when none."""
    try:
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
    except OSError as error:
        raise InputError(f"{name} folder {folder} could not be listed ({error}).") from None
    if not files:
        raise InputError(f"{name} folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def folder_is_gray(files: list[Path], name: str = "input") -> bool:
    """Whether every image is grayscale (then the set has one channel); checks one size too.

    Only headers are read, except for palette images, whose colours must be looked at.
    """
    first_size = None
    gray = True
    for path in files:
        with open_image(path, name) as image:
            if first_size is None:
                first_size = image.size
            elif image.size != first_size:
                raise InputError(
                    f"{name} image {path} is {image.size[1]} x {image.size[0]} but the first "
                    f"image is {first_size[1]} x {first_size[0]}; all images of a set must "
                    "have one size."
                )
            gray = gray and _is_gray(image)
    return gray


def folder_batches(files: list[Path], name: str, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 N x C x H x W batches of an image folder's files, decoded lazily."""
    gray = folder_is_gray(files, name)
    for start in range(0, len(files), batch_size):
        images = [decode_image(path, name, gray) for path in files[start : start + batch_size]]
        yield np.stack(images)


def read_image_folder(folder: Path, name: str = "input") -> np.ndarray:
    """Every image of a folder as one uint8 N x C x H x W array."""
    files = image_files(folder, name)
    return np.concatenate(list(folder_batches(files, name, len(files))))


def describe_shape(array: Any) -> str:
    """`array 10 x 28 x 28` or `tensor ...` for input descriptions."""
    kind = "tensor" if isinstance(array, torch.Tensor) else "array"
    return f"{kind} {shape_text(tuple(array.shape))}"


register_reader(".npy", _read_npy)
register_reader(".npz", _read_npz)
register_reader((".pt", ".pth"), _read_torch)
register_reader(".safetensors", _read_safetensors)
register_reader(IMAGE_SUFFIXES, _read_image)
