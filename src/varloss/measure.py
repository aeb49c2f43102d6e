"""`measure(real, reconstructed, generated)`: how much variance a model loses, and why.

Inputs may be numpy arrays, torch tensors, iterables of batches, or paths (`.npy`, `.npz` with
`file.npz:key`, `.pt`/`.pth` saved with torch.save and `.safetensors`, both with `file:key` for
one of several tensors, or a folder of PNG/JPEG images sorted by name). Layouts N x D, N x H x W and
N x C x H x W are accepted (N x H x W x C is detected for image files and for 4-D arrays whose
last axis looks like channels). uint8 data is scaled to [0, 1]; float data is taken as it is.
Everything streams through `varloss.stats` in float64, so memory stays O(D) for paths and
iterables. `measure_model(model, real)` runs a model (any framework's, through its
`reconstruct`/`sample` or two functions) over the real set batch by batch and measures it the
same way, without ever holding its outputs.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varloss._io import atomic_write_json
from varloss.errors import InputError
from varloss.stats import MomentAccumulator, PairedMomentAccumulator, channel_means, feature_mean

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SET_NAMES = ("real", "reconstructed", "generated")
MAP_SUMMARY_KEYS = (
    "var_real",
    "var_reconstructed",
    "var_generated",
    "variance_loss_reconstructed",
    "variance_loss_generated",
    "mse",
    "bias2",
    "cov_term",
)
_CHANNEL_COUNTS = (1, 3, 4)

Source = Any  # np.ndarray | torch.Tensor | str | Path | Iterable of batches
ValueRange = tuple[float, float]


# --------------------------------------------------------------------------------------------------
# Reading inputs


@dataclass
class _Stream:
    """One input set: where it came from, its sample count when known, and its batches."""

    name: str
    description: str
    count: int | None
    batches: Iterator[torch.Tensor]


def _split_npz_key(text: str) -> tuple[Path, str | None]:
    path = Path(text)
    if path.exists() or ":" not in text:
        return path, None
    head, key = text.rsplit(":", 1)
    return Path(head), key


def _pick_key(keys: list[str], key: str | None, path: Path, name: str) -> str:
    """The named array of a multi-array file, or its only one."""
    if key is None:
        if len(keys) != 1:
            raise InputError(
                f"{name} file {path} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
                f"name one as {path}:KEY."
            )
        return keys[0]
    if key not in keys:
        raise InputError(f"{name} file {path} has no array {key!r}; it holds: {', '.join(keys)}.")
    return key


def _open_npz(path: Path, key: str | None, name: str) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any reader failure is a user-facing input problem
        raise InputError(f"{name} file {path} could not be read as .npz ({error}).") from None
    with archive:
        key = _pick_key(list(archive.files), key, path, name)
        try:
            return archive[key]
        except Exception as error:  # noqa: BLE001
            raise InputError(f"{name} array {path}:{key} could not be read ({error}).") from None


def _open_safetensors(path: Path, key: str | None, name: str) -> torch.Tensor:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as tensors:
            key = _pick_key(list(tensors.keys()), key, path, name)
            return tensors.get_tensor(key)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001
        raise InputError(
            f"{name} file {path} could not be read as .safetensors ({error})."
        ) from None


def _open_torch(path: Path, key: str | None, name: str) -> torch.Tensor:
    """A tensor saved with torch.save, or one tensor of a saved dict; loaded with
    `weights_only=True` (no code runs) and memory-mapped."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001
        raise InputError(
            f"{name} file {path} could not be read as a torch-saved tensor ({error})."
        ) from None
    if isinstance(saved, dict):
        tensors = {str(k): v for k, v in saved.items() if isinstance(v, torch.Tensor)}
        saved = tensors[_pick_key(list(tensors), key, path, name)]
    elif key is not None:
        raise InputError(f"{name} file {path} holds one tensor, not named arrays; drop :{key}.")
    if not isinstance(saved, torch.Tensor):
        raise InputError(
            f"{name} file {path} holds a {type(saved).__name__}; expected a tensor or a dict of "
            "tensors."
        )
    return saved


def _image_files(folder: Path, name: str) -> list[Path]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError(f"{name} folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def _decode_image(path: Path, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "RGB"):
                image = image.convert("L" if image.mode in ("1", "I;16", "I", "F") else "RGB")
            array = np.asarray(image)
    except Exception as error:  # noqa: BLE001
        raise InputError(f"{name} image {path} could not be decoded ({error}).") from None
    if array.ndim == 2:
        return array[None]
    return np.transpose(array, (2, 0, 1))


def _folder_batches(files: list[Path], name: str, batch_size: int) -> Iterator[np.ndarray]:
    first_shape = None
    for start in range(0, len(files), batch_size):
        images = [_decode_image(path, name) for path in files[start : start + batch_size]]
        for path, image in zip(files[start : start + batch_size], images, strict=True):
            if first_shape is None:
                first_shape = image.shape
            elif image.shape != first_shape:
                raise InputError(
                    f"{name} image {path} is {_shape_text(image.shape)} but the first image is "
                    f"{_shape_text(first_shape)}; all images of a set must have one size."
                )
        yield np.stack(images)


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


def _sample_dims(shape: tuple[int, ...], name: str) -> tuple[tuple[int, ...], bool]:
    """Per-sample dims (C, H, W) or (D,) of a batch shape, and whether it is channels-last."""
    if len(shape) == 2:
        return (shape[1],), False
    if len(shape) == 3:
        return (1, shape[1], shape[2]), False
    if len(shape) == 4:
        if shape[-1] in _CHANNEL_COUNTS and shape[1] not in _CHANNEL_COUNTS:
            return (shape[3], shape[1], shape[2]), True
        return tuple(shape[1:]), False
    raise InputError(
        f"{name} has shape {_shape_text(shape)}; expected N x D, N x H x W or N x C x H x W."
    )


def _to_tensor(batch: Any, name: str) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch.detach()
    array = np.asarray(batch)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{name} holds {array.dtype} values; expected numbers.")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not array.flags.writeable:  # a memory-mapped .npy: copy the batch
        return torch.from_numpy(np.array(array))
    return torch.from_numpy(np.ascontiguousarray(array))


def _array_batches(array: Any, batch_size: int) -> Iterator[Any]:
    for start in range(0, len(array), batch_size):
        yield array[start : start + batch_size]


def _dataset_stream(spec: str, name: str, batch_size: int) -> _Stream | None:
    """A registered data set given as `name[:split]` (e.g. `mnist:test`), or None."""
    from varloss.data import resolve_dataset_spec

    loaded = resolve_dataset_spec(spec)
    if loaded is None:
        return None
    description = f"data set {loaded.name}:{loaded.split} ({loaded.source})".replace(" ()", "")
    return _Stream(name, description, len(loaded.images), _array_batches(loaded.images, batch_size))


def open_source(source: Source, name: str = "input", *, batch_size: int = 1024) -> _Stream:
    """Turn any accepted input into a stream of raw batches (not yet scaled or checked)."""
    if isinstance(source, str | Path):
        text = str(source)
        path, key = _split_npz_key(text)
        if path.is_dir():
            files = _image_files(path, name)
            return _Stream(name, text, len(files), _folder_batches(files, name, batch_size))
        if not path.exists():
            dataset = _dataset_stream(text, name, batch_size)
            if dataset is not None:
                return dataset
            raise InputError(
                f"{name} {text!r} is neither an existing path nor a data set such as mnist:test "
                "(see `varloss data list`)."
            )
        suffix = path.suffix.lower()
        if suffix == ".npz":
            array = _open_npz(path, key, name)
        elif suffix == ".safetensors":
            array = _open_safetensors(path, key, name)
        elif suffix in (".pt", ".pth"):
            array = _open_torch(path, key, name)
        elif suffix == ".npy":
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as error:  # noqa: BLE001
                raise InputError(
                    f"{name} file {path} could not be read as .npy ({error})."
                ) from None
        elif suffix in IMAGE_SUFFIXES:
            return _Stream(name, text, 1, iter([_decode_image(path, name)[None]]))
        else:
            raise InputError(
                f"{name} path {path} is not a .npy, .npz, .pt, .safetensors, image or image "
                f"folder (got suffix {suffix or 'none'!r})."
            )
        return _Stream(
            name, text, len(array) if array.ndim else 0, _array_batches(array, batch_size)
        )
    if isinstance(source, np.ndarray | torch.Tensor):
        if source.ndim == 0:
            raise InputError(f"{name} is a scalar; expected N x D, N x H x W or N x C x H x W.")
        kind = "tensor" if isinstance(source, torch.Tensor) else "array"
        return _Stream(
            name,
            f"{kind} {_shape_text(tuple(source.shape))}",
            len(source),
            _array_batches(source, batch_size),
        )
    if isinstance(source, Iterable):
        return _Stream(name, "iterable of batches", None, iter(source))
    raise InputError(
        f"{name} is a {type(source).__name__}; expected an array, a tensor, an iterable of "
        "batches or a path."
    )


@dataclass
class _Checked:
    """Batches scaled to floats, laid out N x D, checked (finite, one shape); min/max kept."""

    stream: _Stream
    value_range: ValueRange | None
    dims: tuple[int, ...] | None = None
    count: int = 0
    low: float = math.inf
    high: float = -math.inf
    dtype: str | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        name = self.stream.name
        for raw in self.stream.batches:
            batch = _to_tensor(raw, name)
            if batch.ndim == 0 or batch.shape[0] == 0:
                continue
            dims, channels_last = _sample_dims(tuple(batch.shape), name)
            if channels_last:
                batch = batch.permute(0, 3, 1, 2)
            if self.dims is None:
                self.dims, self.dtype = dims, str(batch.dtype).removeprefix("torch.")
            elif dims != self.dims:
                raise InputError(
                    f"{name} batches change shape from {_shape_text(self.dims)} to "
                    f"{_shape_text(dims)} "
                    "per sample; all samples of a set must have one shape."
                )
            batch = batch.reshape(batch.shape[0], -1)
            if batch.dtype == torch.uint8:
                batch = batch.to(torch.float64) / 255.0
            elif not batch.is_floating_point():
                batch = batch.to(torch.float64)
            if self.value_range is not None:
                low, high = self.value_range
                batch = (batch.to(torch.float64) - low) / (high - low)
            low, high = torch.aminmax(batch)
            low, high = float(low), float(high)
            if not (math.isfinite(low) and math.isfinite(high)):
                raise InputError(
                    f"{name} contains NaN or infinite values; expected finite numbers."
                )
            self.low, self.high = min(self.low, low), max(self.high, high)
            self.count += batch.shape[0]
            yield batch


def _aligned(
    a: Iterator[torch.Tensor], b: Iterator[torch.Tensor]
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Pairs of equally long row blocks from two batch streams that may be split differently."""
    rest_a = rest_b = None
    while True:
        if rest_a is None or len(rest_a) == 0:
            rest_a = next(a, None)
        if rest_b is None or len(rest_b) == 0:
            rest_b = next(b, None)
        if rest_a is None or rest_b is None:
            # drain the longer stream so that a count mismatch can be reported exactly
            for _ in a:
                pass
            for _ in b:
                pass
            return
        k = min(len(rest_a), len(rest_b))
        yield rest_a[:k], rest_b[:k].to(rest_a.device)
        rest_a, rest_b = rest_a[k:], rest_b[k:]


def read_images(
    source: Source, name: str = "input", *, value_range: ValueRange | None = None
) -> np.ndarray:
    """A whole set in memory as a float array N x C x H x W (or N x D), scaled as `measure` does."""
    checked = _Checked(open_source(source, name), value_range)
    batches = [batch.cpu().numpy() for batch in checked]
    if not batches:
        raise InputError(f"{name} is empty; expected at least one sample.")
    return np.concatenate(batches).reshape(checked.count, *checked.dims)


# --------------------------------------------------------------------------------------------------
# The report


@dataclass
class VarianceReport:
    """Variances (feature means of per-feature population variances), losses and their terms."""

    n_real: int
    dims: list[int]
    var_real: float
    n_reconstructed: int | None = None
    n_generated: int | None = None
    var_reconstructed: float | None = None
    var_generated: float | None = None
    variance_loss_reconstructed: float | None = None
    variance_loss_generated: float | None = None
    mse: float | None = None
    bias2: float | None = None
    cov_term: float | None = None
    per_channel: dict[str, list[float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def ratio_reconstructed(self) -> float | None:
        """Variance loss of the reconstructions over their MSE (about 1 for a good decoder)."""
        if self.variance_loss_reconstructed is None or not self.mse:
            return None
        return self.variance_loss_reconstructed / self.mse

    @property
    def ratio_generated(self) -> float | None:
        """Variance loss of the generated samples over the reconstruction MSE."""
        if self.variance_loss_generated is None or not self.mse:
            return None
        return self.variance_loss_generated / self.mse

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every number and the settings (the maps are left out)."""
        return {
            "n_real": self.n_real,
            "n_reconstructed": self.n_reconstructed,
            "n_generated": self.n_generated,
            "dims": list(self.dims),
            "var_real": self.var_real,
            "var_reconstructed": self.var_reconstructed,
            "var_generated": self.var_generated,
            "variance_loss_reconstructed": self.variance_loss_reconstructed,
            "variance_loss_generated": self.variance_loss_generated,
            "mse": self.mse,
            "bias2": self.bias2,
            "cov_term": self.cov_term,
            "ratio_reconstructed": self.ratio_reconstructed,
            "ratio_generated": self.ratio_generated,
            "per_channel": self.per_channel,
            "settings": self.settings,
        }

    def to_json(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON atomically; returns the path."""
        atomic_write_json(path, self.to_dict())
        return Path(path)

    def save_maps(self, path: str | Path) -> Path:
        """Write the per-feature maps (float64, shaped like one sample) to an .npz, atomically."""
        from varloss._io import atomic_path

        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.savez(handle, **self.maps)
        return Path(path)


def report_from_moments(
    dims: list[int],
    real: MomentAccumulator,
    paired: PairedMomentAccumulator | None = None,
    generated: MomentAccumulator | None = None,
) -> VarianceReport:
    """A `VarianceReport` (numbers, per-channel breakdown, maps) from accumulated moments."""
    var_real_map = real.variance()
    maps: dict[str, torch.Tensor] = {"var_real": var_real_map, "mean_real": real.mean}
    report = VarianceReport(n_real=real.count, dims=list(dims), var_real=feature_mean(var_real_map))
    if paired is not None:
        terms = paired.terms()
        maps.update(terms)
        maps["mean_reconstructed"] = paired.reconstructed.mean
        report.n_reconstructed = paired.count
        for key in ("var_reconstructed", "variance_loss_reconstructed", "mse", "bias2", "cov_term"):
            setattr(report, key, feature_mean(terms[key]))
    if generated is not None:
        var_generated_map = generated.variance()
        maps["var_generated"] = var_generated_map
        maps["mean_generated"] = generated.mean
        maps["variance_loss_generated"] = var_real_map - var_generated_map
        report.n_generated = generated.count
        report.var_generated = feature_mean(var_generated_map)
        report.variance_loss_generated = report.var_real - report.var_generated
    for key in MAP_SUMMARY_KEYS:
        if key in maps:
            per_channel = channel_means(maps[key], tuple(dims))
            if per_channel is not None:
                report.per_channel[key] = per_channel
    report.maps = {key: value.cpu().numpy().reshape(dims) for key, value in maps.items()}
    return report


def _range_kind(low: float, high: float) -> str | None:
    """The conventional value range a set appears to use, or None when it is not clear."""
    if low >= -0.05 and high <= 1.05:
        return "[0, 1]"
    if -1.05 <= low < -0.5 and high <= 1.05:
        return "[-1, 1]"
    if low >= -0.5 and 2.0 < high <= 255.5:
        return "[0, 255]"
    return None


def _check_ranges(real: _Checked, other: _Checked) -> None:
    kind_real, kind_other = _range_kind(real.low, real.high), _range_kind(other.low, other.high)
    if kind_real and kind_other and kind_real != kind_other:
        name = other.stream.name
        raise InputError(
            f"{name} values lie in [{other.low:.3g}, {other.high:.3g}] (a {kind_other} range) "
            "but real values "
            f"in [{real.low:.3g}, {real.high:.3g}] (a {kind_real} range); rescale one of them "
            "or declare "
            f"its range, e.g. --range {name}={kind_other[1:-1].replace(' ', '')} "
            f"(value_range={{'{name}': ({kind_other[1:-1]})}} in Python)."
        )


def _normalise_ranges(value_range: Any) -> dict[str, ValueRange | None]:
    if value_range is None:
        return dict.fromkeys(SET_NAMES)
    if isinstance(value_range, dict):
        unknown = set(value_range) - set(SET_NAMES)
        if unknown:
            raise InputError(
                f"value_range names unknown sets {sorted(unknown)}; expected {list(SET_NAMES)}."
            )
        ranges = {name: value_range.get(name) for name in SET_NAMES}
    else:
        ranges = dict.fromkeys(SET_NAMES, value_range)
    for name, pair in ranges.items():
        if pair is None:
            continue
        try:
            low, high = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise InputError(
                f"value_range for {name} must be a pair (low, high), got {pair!r}."
            ) from None
        if not high > low:
            raise InputError(f"value_range for {name} must have high > low, got {pair!r}.")
        ranges[name] = (low, high)
    return ranges


def _require_samples(checked: _Checked) -> None:
    name = checked.stream.name
    if checked.count == 0:
        raise InputError(f"{name} is empty; expected at least 2 samples.")
    if checked.count < 2:
        raise InputError(f"{name} has 1 sample; a variance needs at least 2.")


def measure(
    real: Source,
    reconstructed: Source | None = None,
    generated: Source | None = None,
    *,
    batch_size: int = 1024,
    value_range: ValueRange | dict[str, ValueRange] | None = None,
    settings: dict[str, Any] | None = None,
) -> VarianceReport:
    """Variances of real, reconstructed and generated sets, variance losses, MSE decomposition.

    `reconstructed` must be paired with `real` sample by sample: same count, same order
    (reconstruction i is the model's output for real sample i); `generated` may have any size of
    at least 2. Each set's variance is the mean over features of the per-feature population
    variance across samples, `np.mean(np.var(x, axis=0))`, accumulated in float64.
    `value_range` maps a set (or all sets) from (low, high) linearly to [0, 1] before measuring,
    e.g. `{"generated": (-1, 1)}`.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}.")
    ranges = _normalise_ranges(value_range)
    sources = {"real": real, "reconstructed": reconstructed, "generated": generated}
    checked = {
        name: _Checked(open_source(source, name, batch_size=batch_size), ranges[name])
        for name, source in sources.items()
        if source is not None
    }
    recon = checked.get("reconstructed")
    if recon is not None and None not in (recon.stream.count, checked["real"].stream.count):
        if recon.stream.count != checked["real"].stream.count:
            raise InputError(
                f"reconstructed has {recon.stream.count} samples but real has "
                f"{checked['real'].stream.count}; "
                "reconstructions must be paired with real samples one to one, in the same order."
            )

    paired: PairedMomentAccumulator | None = None
    real_moments = MomentAccumulator()
    if recon is not None:
        paired = PairedMomentAccumulator()
        for x, y in _aligned(iter(checked["real"]), iter(recon)):
            if recon.dims != checked["real"].dims:
                break  # reported below, once both shapes are known
            paired.update(x, y)
        if None not in (recon.dims, checked["real"].dims) and recon.dims != checked["real"].dims:
            raise InputError(
                f"reconstructed samples are {_shape_text(recon.dims)} but real samples are "
                f"{_shape_text(checked['real'].dims)}; they must have the same shape."
            )
        if recon.count != checked["real"].count:
            raise InputError(
                f"reconstructed has {recon.count} samples but real has {checked['real'].count}; "
                "reconstructions must be paired with real samples one to one, in the same order."
            )
        real_moments = paired.real
    else:
        for batch in checked["real"]:
            real_moments.update(batch)
    real_set = checked["real"]
    dims = real_set.dims
    _require_samples(real_set)
    if recon is not None:
        _require_samples(recon)
        if recon.dims != dims:
            raise InputError(
                f"reconstructed samples are {_shape_text(recon.dims)} but real samples are "
                f"{_shape_text(dims)}; "
                "they must have the same shape."
            )
        _check_ranges(real_set, recon)

    generated_moments = None
    gen = checked.get("generated")
    if gen is not None:
        generated_moments = MomentAccumulator()
        for batch in gen:
            if batch.shape[1] != real_moments.mean.numel():
                raise InputError(
                    f"generated samples have {batch.shape[1]} values but real samples have "
                    f"{real_moments.mean.numel()} ({_shape_text(dims)}); they must have the "
                    "same size."
                )
            generated_moments.update(batch)
        _require_samples(gen)
        _check_ranges(real_set, gen)

    report = report_from_moments(list(dims), real_moments, paired, generated_moments)
    from varloss import __version__

    report.settings = {
        "inputs": {name: c.stream.description for name, c in checked.items()},
        "dtypes": {name: c.dtype for name, c in checked.items()},
        "observed_ranges": {name: [c.low, c.high] for name, c in checked.items()},
        "value_range": {
            name: list(r) for name, r in ranges.items() if r is not None and name in checked
        },
        "batch_size": batch_size,
        "variance": "mean over features of the population variance (ddof=0) across samples, "
        "float64",
        "varloss_version": __version__,
        **(settings or {}),
    }
    return report


# --------------------------------------------------------------------------------------------------
# Models


def model_device(model: Any) -> torch.device:
    """Where a model's parameters live (CPU for objects without any)."""
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return torch.device("cpu")


def measure_model(
    model: Any,
    real: Source,
    *,
    reconstruct: Callable[[torch.Tensor], Any] | None = None,
    generate: Callable[[int], Any] | None = None,
    n_generated: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    value_range: ValueRange | dict[str, ValueRange] | None = None,
    settings: dict[str, Any] | None = None,
) -> VarianceReport:
    """`measure` a model directly: its reconstructions of `real` and its samples, streamed.

    `real` is any `measure` input; each batch (scaled to floats, shaped N x C x H x W or as
    given) goes through `reconstruct` (default: `model.reconstruct`) on the model's device, and
    `n_generated` samples (default: as many as real samples) come from `generate(n)` (default:
    `model.sample(n)`), drawn under a torch RNG seeded with `seed` so the numbers repeat. Either
    side may be missing (`model=None` with only one function, or a model without `sample`).
    An `nn.Module` is measured in eval mode and under `torch.no_grad()`, then put back as it was.
    Outputs are checked like `measure`'s inputs (shape, count, NaN, value range).
    """
    if reconstruct is None and model is not None and callable(getattr(model, "reconstruct", None)):
        reconstruct = model.reconstruct
    if generate is None and model is not None and callable(getattr(model, "sample", None)):
        generate = model.sample
    if reconstruct is None and generate is None:
        raise InputError(
            f"model {type(model).__name__} has neither reconstruct(x) nor sample(n); pass "
            "reconstruct= and/or generate= functions."
        )
    if n_generated is not None and (isinstance(n_generated, bool) or int(n_generated) < 2):
        raise InputError(f"n_generated must be an integer of at least 2, got {n_generated!r}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}.")
    ranges = _normalise_ranges(value_range)
    device = model_device(model)
    real_set = _Checked(open_source(real, "real", batch_size=batch_size), ranges["real"])
    outputs: deque[Any] = deque()

    def real_batches() -> Iterator[torch.Tensor]:
        # `measure` pairs the streams by pulling a real batch, then its reconstruction.
        for batch in real_set:
            images = batch.reshape(batch.shape[0], *real_set.dims)
            if reconstruct is not None:
                inputs = images.to(device=device, dtype=torch.float32)
                outputs.append(_detached(reconstruct(inputs)))
            yield images

    def reconstructions() -> Iterator[Any]:
        while outputs:
            yield outputs.popleft()

    def samples() -> Iterator[Any]:
        total = int(n_generated) if n_generated is not None else real_set.count
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, total, batch_size):
                yield _detached(generate(min(batch_size, total - start)))

    training = getattr(model, "training", None)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            report = measure(
                real_batches(),
                reconstructions() if reconstruct is not None else None,
                samples() if generate is not None else None,
                batch_size=batch_size,
                value_range={k: v for k, v in ranges.items() if v is not None and k != "real"},
                settings={
                    "model": type(model).__name__ if model is not None else None,
                    "reconstructed_by": _function_name(reconstruct),
                    "generated_by": _function_name(generate),
                    "seed": seed,
                    **(settings or {}),
                },
            )
    finally:
        if isinstance(model, torch.nn.Module) and training:
            model.train()
    report.settings["inputs"]["real"] = real_set.stream.description
    if ranges["real"] is not None:
        report.settings["value_range"]["real"] = list(ranges["real"])
    return report


def _detached(output: Any) -> Any:
    return output.detach() if isinstance(output, torch.Tensor) else output


def _function_name(function: Callable[..., Any] | None) -> str | None:
    if function is None:
        return None
    owner = getattr(function, "__self__", None)
    name = getattr(function, "__qualname__", None) or type(function).__name__
    return f"{type(owner).__name__}.{function.__name__}" if owner is not None else name
