"""`VarianceReport`: the numbers `measure` returns, their per-channel breakdown and maps, and
the warnings a reader of those numbers must see (`variance_warnings`, the one rule)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varloss._io import atomic_write_json
from varloss.runs import RunFolder
from varloss.stats import MomentAccumulator, PairedMomentAccumulator, channel_means, feature_mean

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

# A reconstructed or generated set whose (mean per-pixel) variance is below this fraction of the
# real set's is taken not to vary: the decoder gives about the same image for every input.
CONSTANT_OUTPUT_FRACTION = 1e-8
VARIANCES = {"var_reconstructed": "reconstructed", "var_generated": "generated"}


def variance_warnings(report: Mapping[str, Any]) -> list[str]:
    """Warnings about a report's numbers (a `VarianceReport.to_dict()` or any mapping with its
    keys), one sentence each, for tables, JSON and pages alike.

    A reconstructed or generated set whose variance is below CONSTANT_OUTPUT_FRACTION of the
    real variance does not vary across inputs (a decoder that ignores its code, e.g. a collapsed
    VAE or VampPrior): its variance loss is then the whole real variance, and its MSE mostly the
    real variance too, which says little about the model's reconstructions. Real images that do
    not vary at all (variance 0) leave nothing to lose: every variance loss is then 0 or
    negative, and no fraction of the real variance means anything.
    """
    var_real = report.get("var_real")
    if not isinstance(var_real, int | float) or not math.isfinite(var_real):
        return []
    if var_real <= 0:
        return [
            f"real images do not vary (variance {var_real:.3g}): there is no variance to "
            "lose, so the variance losses and their ratios compare nothing"
        ]
    warnings = []
    fraction = f"{CONSTANT_OUTPUT_FRACTION:g}".replace("e-0", "e-")  # 1e-8, as the docs write it
    for key, name in VARIANCES.items():
        value = report.get(key)
        if isinstance(value, int | float) and value < CONSTANT_OUTPUT_FRACTION * var_real:
            warnings.append(
                f"{name} images do not vary across inputs: their variance {value:.3g} is below "
                f"{fraction} of the real variance {var_real:.6g} (whatever made them gives about "
                "the same image for every input, e.g. a collapsed decoder)"
            )
    return warnings


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
    # the optional splits (`measure(spectrum=..., pca=...)`): variance.spectrum / variance.pca
    spectrum: dict[str, Any] | None = field(default=None, repr=False)
    pca: dict[str, Any] | None = field(default=None, repr=False)
    # what autoencoder papers report beside it (PSNR, SSIM, rFID), set by `varloss measure --fid`
    quality: dict[str, Any] | None = field(default=None, repr=False)

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

    def non_finite(self) -> list[str]:
        """The names of the numbers (ratios and per-channel values included) that are infinite or
        NaN, e.g. when squares of values near 1e200 overflow float64; `measure` refuses them."""
        numbers = {key: getattr(self, key) for key in ("var_real", *MAP_SUMMARY_KEYS[1:])}
        numbers.update(ratio_reconstructed=self.ratio_reconstructed)
        numbers.update(ratio_generated=self.ratio_generated)
        bad = [k for k, v in numbers.items() if v is not None and not math.isfinite(v)]
        for key, values in self.per_channel.items():
            if key not in bad and not all(math.isfinite(v) for v in values):
                bad.append(key)
        for split in ("spectrum", "pca"):  # the optional splits: every number in them
            if not _all_finite(getattr(self, split)):
                bad.append(split)
        return bad

    @property
    def warnings(self) -> list[str]:
        """What a reader of these numbers must be told (`variance_warnings`): a set that does
        not vary, or real images that do not."""
        return variance_warnings({key: getattr(self, key) for key in ("var_real", *VARIANCES)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every number, its `warnings` and the settings (the maps are left
        out); `spectrum`, `pca` and `quality` only when they were measured."""
        splits = {name: getattr(self, name) for name in ("spectrum", "pca", "quality")}
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
            **{name: value for name, value in splits.items() if value is not None},
            "warnings": self.warnings,
            "settings": self.settings,
        }

    def to_json(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON atomically; returns the path."""
        atomic_write_json(path, self.to_dict())
        return Path(path)

    def save_maps(self, path: str | Path) -> Path:
        """Write the per-feature maps (float64, shaped like one sample) to an .npz, atomically,
        with the run-folder layer's one npz writer (outside any manifest)."""
        path = Path(path)
        return RunFolder(path.parent).write_arrays(path.name, self.maps, record=False)


def _all_finite(value: Any) -> bool:
    """Whether every float in a nested structure of dicts, lists and numbers is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_all_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(_all_finite(item) for item in value)
    return True


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
