"""The one converter from user arrays to images: float N x C x H x W in [0, 1].

Every reader of varloss (`measure`, `fid`, `data`, `train --dataset`) ends here, so one rule
holds everywhere:

- layouts: N x D stays N x D (flat vectors); N x H x W gets one channel; a 4-D array is
  channels-last (N x H x W x C) exactly when its last axis is 1, 3 or 4 and its second axis is
  not, and is then moved to N x C x H x W; every other 4-D array is taken as N x C x H x W;
- values: uint8 is divided by 255; bool becomes 0 and 1; floats are taken as they are; other
  integers (uint16, int32, ...) have no standard range and must have it declared;
  `value_range=(low, high)` maps any real dtype linearly from [low, high] to [0, 1];
- refused: complex and other non-numeric dtypes, 0-d arrays, other numbers of axes, NaN and
  infinities. Each refusal is one `InputError` sentence naming the input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from varloss.errors import InputError

CHANNEL_COUNTS = (1, 3, 4)
"""Channel counts a last axis may have for an array to be read as N x H x W x C."""

ValueRange = tuple[float, float]

_LAYOUTS = "N x D, N x H x W, N x C x H x W or N x H x W x C"
_EXPECTED_DTYPES = "expected real numbers (uint8, integers or floats)"


def shape_text(shape: tuple[int, ...] | torch.Size) -> str:
    """`2 x 3 x 4` for a shape, as error messages print it."""
    return " x ".join(str(int(s)) for s in shape)


def is_channels_last(shape: tuple[int, ...] | torch.Size) -> bool:
    """The one channels-last rule: 4-D, last axis 1, 3 or 4, second axis not."""
    return len(shape) == 4 and shape[-1] in CHANNEL_COUNTS and shape[1] not in CHANNEL_COUNTS


def image_layout(shape: tuple[int, ...] | torch.Size, name: str = "images") -> tuple[int, ...]:
    """Per-sample dims after conversion: (D,), (1, H, W) or (C, H, W); InputError otherwise."""
    if len(shape) == 0:
        raise InputError(
            f"{name} is a single number (a 0-d array); expected a batch shaped {_LAYOUTS}."
        )
    if len(shape) not in (2, 3, 4):
        raise InputError(f"{name} has shape {shape_text(shape)}; expected {_LAYOUTS}.")
    if 0 in tuple(shape[1:]):  # a variance over no pixels is 0/0: refused, never printed as nan
        raise InputError(
            f"{name} has shape {shape_text(shape)}, images without pixels (an axis of size 0); "
            "expected at least one value per sample."
        )
    if len(shape) == 2:
        return (int(shape[1]),)
    if len(shape) == 3:
        return (1, int(shape[1]), int(shape[2]))
    if is_channels_last(shape):
        return (int(shape[3]), int(shape[1]), int(shape[2]))
    return tuple(int(s) for s in shape[1:])


def as_tensor(x: Any, name: str = "images") -> torch.Tensor:
    """A tensor view (or copy) of an array, tensor or nested list, with its dtype checked."""
    if isinstance(x, torch.Tensor):
        tensor = x.detach()
    else:
        try:
            array = np.asarray(x)
        except (TypeError, ValueError) as error:
            raise InputError(f"{name} is not an array of numbers ({error}).") from None
        _check_numpy_dtype(array.dtype, name)
        if array.dtype.byteorder not in ("=", "|") or not array.flags.c_contiguous:
            array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("=")))
        if not array.flags.writeable:  # a memory-mapped .npy: torch wants a writable buffer
            array = np.array(array)
        tensor = torch.from_numpy(array)
    if tensor.is_complex() or tensor.dtype in _NON_NUMERIC_TORCH:
        raise InputError(
            f"{name} holds {str(tensor.dtype).removeprefix('torch.')} values; {_EXPECTED_DTYPES}."
        )
    return tensor


_NON_NUMERIC_TORCH = {getattr(torch, n) for n in ("quint8", "qint8", "qint32") if hasattr(torch, n)}


def _check_numpy_dtype(dtype: np.dtype, name: str) -> None:
    if dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating):
        return
    raise InputError(f"{name} holds {dtype} values; {_EXPECTED_DTYPES}.")


def to_images(
    x: Any,
    *,
    name: str = "images",
    value_range: ValueRange | None = None,
    dtype: torch.dtype | None = torch.float32,
    check_unit_range: bool = False,
) -> torch.Tensor:
    """`x` (array, tensor, nested list) as float N x C x H x W in [0, 1] (N x D stays N x D).

    The tensor stays on its device and may share memory with `x`. `value_range=(low, high)`
    maps [low, high] to [0, 1]; without it uint8 is scaled by 1/255 and floats are kept as they
    are. `dtype=None` keeps a float input's dtype (float64 for everything that is scaled).
    `check_unit_range` also refuses results outside [0, 1] (a 1% tolerance for rounding), for
    consumers such as feature extractors that need true pixel values. Raises `InputError`
    naming `name`.
    """
    images, _, _ = convert_images(
        x, name=name, value_range=value_range, dtype=dtype, check_unit_range=check_unit_range
    )
    return images


def convert_images(
    x: Any,
    *,
    name: str = "images",
    value_range: ValueRange | None = None,
    dtype: torch.dtype | None = torch.float32,
    check_unit_range: bool = False,
) -> tuple[torch.Tensor, float, float]:
    """`to_images` and the smallest and largest converted value (inf, -inf when empty), which
    the finiteness check computes anyway; streaming readers keep them to compare ranges."""
    tensor = as_tensor(x, name)
    dims = image_layout(tuple(tensor.shape), name)
    if is_channels_last(tuple(tensor.shape)):
        tensor = tensor.permute(0, 3, 1, 2)
    images = _scaled(tensor, name, value_range, dtype)
    low, high = math.inf, -math.inf
    if images.numel():
        low, high = (float(v) for v in torch.aminmax(images))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise InputError(f"{name} contains NaN or infinite values; expected finite numbers.")
        if check_unit_range and (low < -0.01 or high > 1.01):
            raise InputError(
                f"{name} holds values in [{low:.3g}, {high:.3g}]; expected pixel values in "
                "[0, 1] (or uint8); declare another range, e.g. value_range=(-1, 1)."
            )
    return images.reshape(images.shape[0], *dims).contiguous(), low, high


def _scaled(
    tensor: torch.Tensor, name: str, value_range: ValueRange | None, dtype: torch.dtype | None
) -> torch.Tensor:
    """The values of `tensor` in `dtype`, mapped to [0, 1] by the dtype's rule or `value_range`."""
    if dtype is not None and not dtype.is_floating_point:
        raise InputError(f"dtype for {name} must be a floating point dtype, got {dtype}.")
    if value_range is not None:
        low, high = check_value_range(value_range, name)
        return (tensor.to(dtype or torch.float64) - low) / (high - low)
    if tensor.dtype == torch.uint8:
        return tensor.to(dtype or torch.float64) / 255.0
    if tensor.dtype == torch.bool:
        return tensor.to(dtype or torch.float64)
    if tensor.is_floating_point():
        return tensor if dtype is None else tensor.to(dtype)
    maximum = torch.iinfo(tensor.dtype).max
    raise InputError(
        f"{name} holds {str(tensor.dtype).removeprefix('torch.')} values, whose range varloss "
        f"cannot guess; declare it, e.g. value_range=(0, {maximum}) (--range {name}=0,{maximum} "
        "on the command line), or pass uint8 or floats in [0, 1]."
    )


def check_value_range(value_range: Any, name: str = "images") -> ValueRange:
    """A declared (low, high) as two floats with high > low; InputError otherwise."""
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InputError(
            f"value_range for {name} must be a pair (low, high), got {value_range!r}."
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise InputError(f"value_range for {name} must have high > low, got {value_range!r}.")
    return low, high
