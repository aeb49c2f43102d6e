"""Where in the spatial spectrum the variance goes: the measure numbers split by radial frequency.

The orthonormal 2-D DFT is unitary, so per channel the sum over pixels of each pixel's variance
across a set equals the sum over frequencies of the variance of the (complex) Fourier
coefficients, and the same holds for the co-moments: `var(x) - var(y) = mse - bias² + cov_term`
holds frequency by frequency. The features are the real and imaginary parts of a batch's real
FFT (`rfft2`, norm="ortho", float64); their moments per batch come from `varloss.variance.fourier`
(centred in pixel space, one FFT per image) and merge across batches with Chan's formula
(`varloss.stats`): memory O(D), batch-size independent, on any device.
A coefficient of the half spectrum stands for itself and its complex conjugate (weight 2)
except on the columns fx = 0 and fx = -1/2, so weighted sums equal the full-spectrum sums.

Each band's value is its additive share of the total (the same units as the measure report:
mean over pixels), so the bands sum to the totals to rounding. Radial frequency is
sqrt(fy² + fx²) in cycles per pixel, fy and fx from `np.fft.fftfreq`; bands are `[lo, hi)` of
equal width from 0 to the largest radius present, the last one closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from varloss.errors import InputError
from varloss.stats import MomentAccumulator, PairedMomentAccumulator
from varloss.variance.fourier import frequency_rows, moments, paired_moments
from varloss.variance.report import MAP_SUMMARY_KEYS

DEFAULT_BANDS = 8
# "High frequency": at or above half the Nyquist radius (0.5 cycles/pixel).
HIGH_FREQUENCY_RADIUS = 0.25
# every band carries the same quantities as the report's totals
QUANTITIES = MAP_SUMMARY_KEYS
TRANSFORM = (
    "orthonormal 2-D DFT per channel (rfft2, norm='ortho', float64); radius sqrt(fy^2 + fx^2) in "
    "cycles per pixel, fy and fx from np.fft.fftfreq; bands [lo, hi) of equal width, the last "
    "closed; each band's value is its share of the total, so bands sum to the totals"
)

__all__ = [
    "DEFAULT_BANDS",
    "HIGH_FREQUENCY_RADIUS",
    "QUANTITIES",
    "SpectrumAccumulator",
    "check_bands",
    "frequency_layout",
    "frequency_rows",
    "image_shape",
    "spectrum_from_moments",
]


def check_bands(bands: Any) -> int:
    """The number of bands as a positive int, or one sentence saying what was expected."""
    if isinstance(bands, bool) or not isinstance(bands, int | np.integer) or int(bands) < 1:
        raise InputError(f"bands must be a positive integer, got {bands!r}.")
    return int(bands)


def image_shape(dims: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of samples shaped C x H x W or H x W; other shapes are refused."""
    dims = tuple(int(d) for d in dims)
    if len(dims) == 2:
        return (1, *dims)
    if len(dims) == 3:
        return dims  # type: ignore[return-value]
    raise InputError(
        f"the spectrum needs images (C x H x W or H x W samples), got samples of shape "
        f"{' x '.join(map(str, dims))}; give images, not flat vectors."
    )


def frequency_layout(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(radius, weight) of each feature of `frequency_rows`: the radial frequency in cycles per
    pixel and how many coefficients of the full spectrum it stands for (1 or 2)."""
    channels, height, width = shape
    fy = np.fft.fftfreq(height)
    fx = np.fft.rfftfreq(width)
    radius = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    weight = np.full(fx.shape, 2.0)
    weight[0] = 1.0
    if width % 2 == 0:
        weight[-1] = 1.0  # fx = -1/2 is its own conjugate
    weight = np.broadcast_to(weight[None, :], radius.shape)
    # features are ordered C x H x (W//2 + 1) x (real, imaginary)
    expand = (channels, height, fx.size, 2)
    return (
        np.broadcast_to(radius[None, :, :, None], expand).reshape(-1),
        np.broadcast_to(weight[None, :, :, None], expand).reshape(-1),
    )


def band_edges(shape: tuple[int, int, int], bands: int) -> np.ndarray:
    """Equal-width band edges from 0 to the largest radius present."""
    radius, _ = frequency_layout(shape)
    return np.linspace(0.0, float(radius.max()), check_bands(bands) + 1)


def _band_index(radius: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The band of each radius: [lo, hi), the last band closed."""
    index = np.searchsorted(edges, radius, side="right") - 1
    return np.clip(index, 0, len(edges) - 2)


def _feature_terms(
    real: MomentAccumulator,
    paired: PairedMomentAccumulator | None,
    generated: MomentAccumulator | None,
) -> dict[str, np.ndarray]:
    """Per-feature terms of the frequency features (the pixel formulas of `varloss.stats`)."""
    terms = {"var_real": real.variance()}
    if paired is not None and paired.count:
        terms.update(paired.terms())
    if generated is not None and generated.count:
        terms["var_generated"] = generated.variance()
        terms["variance_loss_generated"] = terms["var_real"] - terms["var_generated"]
    return {key: value.detach().cpu().numpy().astype(np.float64) for key, value in terms.items()}


def spectrum_from_moments(
    shape: tuple[int, int, int],
    real: MomentAccumulator,
    paired: PairedMomentAccumulator | None = None,
    generated: MomentAccumulator | None = None,
    bands: int = DEFAULT_BANDS,
) -> dict[str, Any]:
    """The `spectrum` object of a report from moments of `frequency_rows` features.

    Keys: `edges`, `bands` (one object per band: lo, hi, the QUANTITIES as shares of the total,
    null for absent sets, `kept_reconstructed`, `kept_generated`), `totals` (the sums over bands),
    `high_frequency_share` ({"reconstructed", "generated"}: the share of the variance loss at
    radii >= HIGH_FREQUENCY_RADIUS), `high_frequency_radius`, `shape` and `transform`.
    """
    radius, weight = frequency_layout(shape)
    edges = band_edges(shape, bands)
    index = _band_index(radius, edges)
    pixels = float(np.prod(shape))
    terms = _feature_terms(real, paired, generated)
    scale = weight / pixels  # the share of the mean over pixels each feature carries
    per_band = {
        key: np.bincount(index, weights=value * scale, minlength=len(edges) - 1)
        for key, value in terms.items()
    }
    rows = []
    for band in range(len(edges) - 1):
        row: dict[str, Any] = {"lo": float(edges[band]), "hi": float(edges[band + 1])}
        for key in QUANTITIES:
            row[key] = float(per_band[key][band]) if key in per_band else None
        for kind in ("reconstructed", "generated"):
            kept = row[f"var_{kind}"]
            row[f"kept_{kind}"] = (
                kept / row["var_real"] if kept is not None and row["var_real"] else None
            )
        rows.append(row)
    high = radius >= HIGH_FREQUENCY_RADIUS
    share = {}
    for kind in ("reconstructed", "generated"):
        loss = terms.get(f"variance_loss_{kind}")
        total = None if loss is None else float(np.sum(loss * scale))
        share[kind] = float(np.sum((loss * scale)[high]) / total) if total else None
    totals = {key: float(per_band[key].sum()) if key in per_band else None for key in QUANTITIES}
    for kind in ("reconstructed", "generated"):
        kept = totals[f"var_{kind}"]
        totals[f"kept_{kind}"] = kept / totals["var_real"] if kept is not None else None
    return {
        "edges": [float(edge) for edge in edges],
        "bands": rows,
        "totals": totals,
        "high_frequency_share": share,
        "high_frequency_radius": HIGH_FREQUENCY_RADIUS,
        "shape": list(shape),
        "transform": TRANSFORM,
    }


@dataclass
class SpectrumAccumulator:
    """Streaming moments of the frequency features of real, reconstructed and generated sets.

    `update_paired(x, y, dims)` for real images and their reconstructions, `update_real(x, dims)`
    when there are none, `update_generated(g, dims)` for samples; `merge` folds another
    accumulator in (Chan's formula), `result()` gives the `spectrum` object.
    """

    bands: int = DEFAULT_BANDS
    shape: tuple[int, int, int] | None = None
    paired: PairedMomentAccumulator = field(default_factory=PairedMomentAccumulator)
    real: MomentAccumulator = field(default_factory=MomentAccumulator)
    generated: MomentAccumulator = field(default_factory=MomentAccumulator)

    def __post_init__(self) -> None:
        self.bands = check_bands(self.bands)

    def _shape(self, dims: Sequence[int]) -> tuple[int, int, int]:
        shape = image_shape(dims)
        if self.shape is None:
            self.shape = shape
        elif int(np.prod(shape)) != int(np.prod(self.shape)):
            raise InputError(
                f"samples of shape {shape} cannot join a spectrum of {self.shape} images."
            )
        return self.shape

    def update_paired(self, real: torch.Tensor, reconstructed: torch.Tensor, dims) -> None:
        self.paired.merge(paired_moments(real, reconstructed, self._shape(dims)))

    def update_real(self, real: torch.Tensor, dims) -> None:
        self.real.merge(moments(real, self._shape(dims)))

    def update_generated(self, generated: torch.Tensor, dims) -> None:
        self.generated.merge(moments(generated, self._shape(dims)))

    def merge(self, other: SpectrumAccumulator) -> SpectrumAccumulator:
        """Fold another accumulator (same image shape) into this one; returns self."""
        self.shape = self.shape or other.shape
        self.paired.merge(other.paired)
        self.real.merge(other.real)
        self.generated.merge(other.generated)
        return self

    def result(self) -> dict[str, Any]:
        """The `spectrum` object (see `spectrum_from_moments`)."""
        paired = self.paired if self.paired.count else None
        real = self.paired.real if paired is not None else self.real
        return spectrum_from_moments(self.shape, real, paired, self.generated, self.bands)
