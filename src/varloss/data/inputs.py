"""Every input varloss accepts, opened one way: `open_source` and `read_images`.

An input is an array, a tensor, an iterable of batches, or a string/path:

- a file, read by its suffix (`varloss.data.readers.READERS`): `.npy`, `.npz` and `.safetensors`
  (`file:key` names one of several arrays), `.pt`/`.pth` (torch.save'd tensor or dict of tensors,
  `weights_only=True`), an image (IMAGE_SUFFIXES);
- a folder of images (sorted by name);
- a registered data set (`mnist:test`, `digits`, `folder:PATH`, `npz:PATH[:KEY]`).

`open_source` streams raw batches (memory O(batch) for files and folders); `CheckedStream`
converts each batch with `to_images`, the one converter, and checks one shape across batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varloss.data.convert import ValueRange, convert_images, shape_text
from varloss.data.loading import resolve_dataset_spec
from varloss.data.readers import (
    IMAGE_SUFFIXES,
    describe_shape,
    folder_batches,
    image_files,
    read_array_file,
    split_key,
)
from varloss.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "CheckedStream", "Source", "Stream", "open_source", "read_images"]

Source = Any  # np.ndarray | torch.Tensor | str | Path | Iterable of batches


@dataclass
class Stream:
    """One input set: its name, where it came from, its sample count when known, its batches."""

    name: str
    description: str
    count: int | None
    batches: Iterator[Any]


def _array_batches(array: Any, batch_size: int) -> Iterator[Any]:
    for start in range(0, len(array), batch_size):
        yield array[start : start + batch_size]


def _array_stream(array: Any, name: str, description: str, batch_size: int) -> Stream:
    if array.ndim == 0:
        raise InputError(
            f"{name} is a single number (a 0-d array); expected a batch shaped N x D, "
            "N x H x W, N x C x H x W or N x H x W x C."
        )
    return Stream(name, description, len(array), _array_batches(array, batch_size))


def _dataset_stream(spec: str, name: str, batch_size: int) -> Stream | None:
    """A registered data set given as `name[:split]` (e.g. `mnist:test`), or None."""
    loaded = resolve_dataset_spec(spec)
    if loaded is None:
        return None
    description = f"data set {loaded.name}:{loaded.split} ({loaded.source})".replace(" ()", "")
    return Stream(name, description, len(loaded.images), _array_batches(loaded.images, batch_size))


def _path_stream(text: str, name: str, batch_size: int) -> Stream:
    path, key = split_key(text)
    if path.is_dir() and key is None:
        files = image_files(path, name)
        return Stream(name, text, len(files), folder_batches(files, name, batch_size))
    if not path.exists():
        dataset = _dataset_stream(text, name, batch_size)
        if dataset is not None:
            return dataset
        raise InputError(
            f"{name} {text!r} is neither an existing path nor a data set such as mnist:test "
            "(see `varloss data list`)."
        )
    return _array_stream(read_array_file(path, key, name), name, text, batch_size)


def open_source(source: Source, name: str = "input", *, batch_size: int = 1024) -> Stream:
    """Turn any accepted input into a stream of raw batches (not yet scaled or checked)."""
    if isinstance(source, str | Path):
        return _path_stream(str(source), name, batch_size)
    if isinstance(source, np.ndarray | torch.Tensor):
        return _array_stream(source, name, describe_shape(source), batch_size)
    if isinstance(source, Iterable):
        return Stream(name, "iterable of batches", None, iter(source))
    raise InputError(
        f"{name} is a {type(source).__name__}; expected an array, a tensor, an iterable of "
        "batches or a path."
    )


@dataclass
class CheckedStream:
    """A stream's batches through `to_images` (floats), flattened to N x D; one shape checked
    across batches; the per-sample dims, sample count, observed min/max and input dtype kept."""

    stream: Stream
    value_range: ValueRange | None = None
    dims: tuple[int, ...] | None = None
    count: int = 0
    low: float = math.inf
    high: float = -math.inf
    dtype: str | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        name = self.stream.name
        for raw in self.stream.batches:
            # dtype=None: float batches keep their dtype (varloss.stats upcasts them to float64
            # chunk by chunk, in cache); uint8, bool and declared ranges become float64.
            batch, low, high = convert_images(
                raw, name=name, value_range=self.value_range, dtype=None
            )
            if batch.shape[0] == 0:
                continue
            dims = tuple(batch.shape[1:])
            if self.dims is None:
                self.dims = dims
                self.dtype = str(getattr(raw, "dtype", batch.dtype)).removeprefix("torch.")
            elif dims != self.dims:
                raise InputError(
                    f"{name} batches change shape from {shape_text(self.dims)} to "
                    f"{shape_text(dims)} per sample; all samples of a set must have one shape."
                )
            batch = batch.reshape(batch.shape[0], -1)
            self.low, self.high = min(self.low, low), max(self.high, high)
            self.count += batch.shape[0]
            yield batch


def read_images(
    source: Source, name: str = "input", *, value_range: ValueRange | None = None
) -> np.ndarray:
    """A whole set in memory as a float64 array N x C x H x W (or N x D), by `to_images`' rule."""
    checked = CheckedStream(open_source(source, name), value_range)
    batches = [batch.to("cpu", torch.float64).numpy() for batch in checked]
    if not batches:
        raise InputError(f"{name} is empty; expected at least one sample.")
    return np.concatenate(batches).reshape(checked.count, *checked.dims)
