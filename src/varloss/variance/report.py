"""`VarianceReport`: the numbers `measure` returns, their per-channel breakdown and maps."""

from __future__ import annotations

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
        """JSON-safe dict of every number and the settings (the maps are left out); `spectrum`
        and `pca` only when they were measured."""
        splits = {name: getattr(self, name) for name in ("spectrum", "pca")}
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
