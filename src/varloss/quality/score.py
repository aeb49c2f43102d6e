"""`fid(real, generated)`: the Fréchet distance on recorded features, its terms, and a JSON dict.

Real-data statistics of named data sets (`"mnist:test"`, an ImageSet) are cached on disk, keyed
by data set, split, sample count, a hash of the pixels, extractor name, weights hash and resize
mode, so repeated evaluations against the same test split extract real features once.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from varloss._hashing import sha256_arrays
from varloss.data import ImageSet, read_images, resolve_dataset_spec, to_images
from varloss.errors import InputError
from varloss.quality.extractors import FeatureExtractor
from varloss.quality.fid_infinity import fid_infinity as compute_fid_infinity
from varloss.quality.frechet import frechet_distance
from varloss.quality.kid import kernel_inception_distance
from varloss.quality.prdc import prdc as compute_prdc
from varloss.quality.registry import get_extractor
from varloss.quality.statistics import (
    FeatureStatistics,
    load_cached,
    load_cached_features,
    store_cached,
)

STATS_CACHE_FORMAT = 1
TERMS = ("mean_term", "trace_real", "trace_generated", "cross_term")


def _unit_images(array: Any, what: str) -> torch.Tensor:
    """float32 N x C x H x W in [0, 1] on the CPU, by `varloss.data.to_images` (the one rule)."""
    if not isinstance(array, np.ndarray | torch.Tensor):
        raise InputError(f"{what} must be images (array, tensor, file or data set), got {array!r}.")
    tensor = to_images(array, name=what, check_unit_range=True).to("cpu")
    if tensor.ndim != 4:
        raise InputError(
            f"{what} must be shaped N x H x W, N x C x H x W or N x H x W x C, got "
            f"{list(tensor.shape)}."
        )
    return tensor


def load_images(source: Any, what: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """(images N x C x H x W in [0, 1], provenance) from a data-set spec, ImageSet, path,
    array/tensor, or an iterable of batches. Provenance names the data set when there is one.

    Files, folders and iterables are read by `varloss.data.read_images`, the same reader as
    `varloss measure`, so both commands accept exactly the same inputs.
    """
    if isinstance(source, ImageSet):
        return source.images.to(torch.float32), {"dataset": source.name, "split": source.split}
    if isinstance(source, np.ndarray | torch.Tensor):
        return _unit_images(source, what), {}
    if isinstance(source, str | os.PathLike):
        text = str(source)
        loaded = resolve_dataset_spec(text)
        if loaded is not None:
            provenance = {"dataset": loaded.name, "split": loaded.split}
            return loaded.images.to(torch.float32), provenance
        return _unit_images(read_images(str(Path(text).expanduser()), what), what), {"path": text}
    if isinstance(source, Iterable):
        batches = (b[0] if isinstance(b, tuple | list) else b for b in source)
        return _unit_images(read_images(batches, what), what), {}
    raise InputError(f"{what} must be images (array, tensor, file or data set), got {source!r}.")


def feature_statistics(
    images: torch.Tensor,
    extractor: FeatureExtractor,
    progress: bool = False,
    keep_features: bool = False,
) -> tuple[FeatureStatistics, torch.Tensor | None]:
    """(float64 mean/covariance state, all features if `keep_features`) of `images`.

    Features are folded into the statistics batch by batch, so memory is O(batch x d + d^2)
    unless the features are kept (precision/recall needs them).
    """
    statistics = FeatureStatistics()
    kept = []
    for batch in extractor.iter_features(images, progress=progress):
        statistics.update(batch)
        if keep_features:
            kept.append(batch)
    return statistics, (torch.cat(kept) if keep_features else None)


def fid(
    real: Any,
    generated: Any,
    *,
    features: str | nn.Module | FeatureExtractor = "domain",
    dataset: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    resize: str | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    cache: bool = True,
    train_domain: bool = True,
    prdc: bool = False,
    kid: bool = False,
    fid_infinity: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """FID of `generated` against `real` with its terms, as a JSON-safe dict.

    `real`/`generated`: data-set specs ("mnist:test"), ImageSets, .npy/.npz/folder paths,
    arrays or tensors (N x [C x] H x W, [0, 1] or uint8). `features`: "domain" (needs
    `dataset`, inferred from a spec or ImageSet), "inception" (weights by path) or a Module;
    `resize`: "tf1-bilinear" (the Inception default, the papers') or "pil-bicubic" (clean-fid's,
    labelled in extractor["resize_label"]). Keys: fid, terms (mean_term, trace_real,
    trace_generated, cross_term), trace_ratio
    (Tr S_gen / Tr S_real, the variance kept in feature space), extractor, n_real,
    n_generated, settings, warnings; plus precision/recall/density/coverage with `prdc`;
    kid, kid_std (`varloss.quality.kid`) with `kid`; fid_infinity and its fit
    (`varloss.quality.fid_infinity`) with `fid_infinity` (settings["kid"], ["fid_infinity"]).
    """
    real_images, real_origin = load_images(real, "real images")
    generated_images, generated_origin = load_images(generated, "generated images")
    _check_pair(real_images, generated_images)
    if dataset is None:
        dataset = real_origin.get("dataset")
    extractor = get_extractor(
        features,
        dataset=dataset,
        weights=weights,
        resize=resize,
        batch_size=batch_size,
        device=device,
        train=train_domain,
        progress=True,
    )
    real_stats, real_features, cached = _real_statistics(
        real_images,
        real_origin,
        extractor,
        cache=cache,
        keep_features=prdc or kid,
        progress=progress,
    )
    generated_stats, generated_features = feature_statistics(
        generated_images, extractor, progress, prdc or kid or fid_infinity
    )
    info = {**extractor.info(), "feature_dim": int(real_stats.mean.shape[0])}
    notes = _sample_size_notes(real_stats, generated_stats, info["feature_dim"])
    terms = frechet_distance(
        real_stats.mean, real_stats.covariance(), generated_stats.mean, generated_stats.covariance()
    )
    result: dict[str, Any] = {
        "fid": terms.fid,
        "terms": {key: getattr(terms, key) for key in TERMS},
        "trace_ratio": terms.trace_ratio,
        "feature_variance_loss": None if terms.trace_ratio is None else 1.0 - terms.trace_ratio,
        "extractor": info,
        "resize_mode": extractor.resize_mode,
        "n_real": int(real_stats.count),
        "n_generated": int(generated_stats.count),
        "settings": _settings(info, dataset, real_origin, generated_origin, batch_size, cached),
        "warnings": notes,
    }
    estimators = {"prdc": prdc, "kid": kid, "fid_infinity": fid_infinity}
    _add_estimators(result, real_stats, real_features, generated_features, estimators)
    return result


def _settings(
    info: dict[str, Any],
    dataset: str | None,
    real_origin: dict[str, Any],
    generated_origin: dict[str, Any],
    batch_size: int,
    cached: bool,
) -> dict[str, Any]:
    """result["settings"]: the choices behind an FID (the extractor's own are in its info)."""
    return {
        "features": info["name"],
        "dataset": dataset,
        "real": dict(real_origin),
        "generated": dict(generated_origin),
        "batch_size": int(batch_size),
        "covariance": "unbiased (N - 1)",
        "real_statistics_cached": cached,
    }


def _add_estimators(
    result: dict[str, Any],
    real_stats: FeatureStatistics,
    real: torch.Tensor | None,
    generated: torch.Tensor | None,
    asked: dict[str, bool],
) -> None:
    """The estimators beside FID that `asked` names: prdc, kid, fid_infinity."""
    if asked["prdc"]:
        result.update(compute_prdc(real, generated))
    if asked["kid"]:
        _add_kid(result, real, generated)
    if asked["fid_infinity"]:
        _add_fid_infinity(result, real_stats, generated)


def _add_kid(result: dict[str, Any], real: torch.Tensor, generated: torch.Tensor) -> None:
    """result["kid"], ["kid_std"] and settings["kid"] (`varloss.quality.kid`)."""
    kid_result = kernel_inception_distance(generated, real)
    result.update(kid=kid_result["kid"], kid_std=kid_result["kid_std"])
    result["settings"]["kid"] = kid_result["settings"]


def _add_fid_infinity(
    result: dict[str, Any], real: FeatureStatistics, generated: torch.Tensor
) -> None:
    """result["fid_infinity"] and its fit, or None and a warning when N is too small."""
    try:
        fit = compute_fid_infinity(real.mean, real.covariance(), generated)
    except InputError as error:
        result.update(fid_infinity=None, fid_infinity_fit=None)
        result["warnings"].append(f"FID∞ not computed: {error}")
        return
    result["fid_infinity"] = fit["fid_infinity"]
    result["fid_infinity_fit"] = {k: fit[k] for k in ("slope", "sizes", "fids")}
    result["settings"]["fid_infinity"] = fit["settings"]


def reference_statistics(
    real: Any, extractor: FeatureExtractor, *, cache: bool = True, progress: bool = True
) -> tuple[FeatureStatistics, bool]:
    """(float64 statistics of the real images' features, whether they came from the cache): a
    named data set's are cached per data set, split, pixels, extractor, weights and resize, the
    same entry `fid` reads, so `fid` and `measure --fid` extract a test split once."""
    images, origin = load_images(real, "real images")
    statistics, _, cached = _real_statistics(
        images, origin, extractor, cache=cache, keep_features=False, progress=progress
    )
    return statistics, cached


def _check_pair(real_images: torch.Tensor, generated_images: torch.Tensor) -> None:
    """Both sets of one image shape, with at least two images each (a covariance needs two)."""
    if real_images.shape[1:] != generated_images.shape[1:]:
        raise InputError(
            f"real and generated images must have the same shape, got "
            f"{list(real_images.shape[1:])} and {list(generated_images.shape[1:])}."
        )
    for name, images in (("real", real_images), ("generated", generated_images)):
        if images.shape[0] < 2:
            raise InputError(f"FID needs at least 2 {name} images, got {images.shape[0]}.")


def _real_statistics(
    images: torch.Tensor,
    origin: dict[str, Any],
    extractor: FeatureExtractor,
    *,
    cache: bool,
    keep_features: bool,
    progress: bool,
) -> tuple[FeatureStatistics, torch.Tensor | None, bool]:
    """(statistics, features if kept, whether the statistics came from the cache) of the real
    set; a named data set's statistics are cached, keyed by everything that determines them."""
    key, cached = None, None
    if cache and "dataset" in origin:
        key = {
            "format": STATS_CACHE_FORMAT,
            "dataset": origin["dataset"],
            "split": origin.get("split"),
            "n": int(images.shape[0]),
            "pixels_sha256": sha256_arrays(images),
            "extractor": extractor.name,
            "weights_hash": extractor.weights_hash,
            "resize_mode": extractor.resize_mode,
        }
        cached = load_cached(key)
        if cached is not None and not keep_features:
            return cached, None, True
        features = None if cached is None else load_cached_features(key)
        if features is not None:
            return cached, features, True
    # a named set's features are cached with its statistics: KID and PR/DC reuse them
    keep = keep_features or key is not None
    statistics, features = feature_statistics(images, extractor, progress, keep)
    if key is not None:
        store_cached(key, statistics, features)
    return statistics, features if keep_features else None, False


class SmallSampleWarning(UserWarning):
    """A set with fewer samples than feature dimensions: its FID is biased upward. The same
    sentence is in the result's `warnings`, which `varloss fid` prints (so it hides this one)."""


def _sample_size_notes(
    real: FeatureStatistics, generated: FeatureStatistics, dim: int
) -> list[str]:
    """A warning per set with fewer samples than feature dimensions (singular covariance)."""
    notes = []
    for name, count in (("real", real.count), ("generated", generated.count)):
        if count < dim:
            note = (
                f"{name} set has {count} samples, fewer than the feature dimension {dim}: its "
                "covariance is singular and the FID is biased upward; use more samples."
            )
            warnings.warn(note, SmallSampleWarning, stacklevel=3)
            notes.append(note)
    return notes
