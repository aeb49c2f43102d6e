"""`VarianceSpectrum`: the spectrum split as a torchmetrics Metric for loops, DDP-safe.

    metric = VarianceSpectrum(bands=8).to(device)
    for x in loader:
        metric.update(x, reconstructed=model.reconstruct(x), generated=model.sample(len(x)))
    metric.compute()  # the `spectrum` object of `varloss.variance.spectrum`

A sibling of `VarianceLoss` over the same moment base (`MomentMetric`): the same float64 moment
states, `update`, merge and gather (Chan's formula under torch.distributed, so the bands equal the
single-process ones, to rounding), taken over the frequency features (`varloss.variance.fourier`,
each batch's moments computed the way `measure` does); its own `compute` gives the spectrum.
Batches must be images (N x C x H x W or N x H x W).
"""

from __future__ import annotations

from typing import Any

import torch

from varloss.stats import MomentAccumulator, PairedMomentAccumulator
from varloss.variance.fourier import moments, paired_moments
from varloss.variance.moment_metric import MomentMetric
from varloss.variance.spectrum import DEFAULT_BANDS, check_bands, image_shape, spectrum_from_moments


class VarianceSpectrum(MomentMetric):
    """The variance, variance losses and MSE terms of real, reconstructed and generated images,
    split by radial spatial frequency band."""

    def __init__(self, bands: int = DEFAULT_BANDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bands = check_bands(bands)
        self.shape: tuple[int, int, int] | None = None

    def _shape(self, images: torch.Tensor) -> tuple[int, int, int]:
        self.shape = self.shape or image_shape(images.shape[1:])
        return self.shape

    def _batch(self, batch: torch.Tensor) -> MomentAccumulator:
        return moments(batch, self._shape(batch))

    def _batch_paired(
        self, real: torch.Tensor, reconstructed: torch.Tensor
    ) -> PairedMomentAccumulator:
        return paired_moments(real, reconstructed, self._shape(real))

    def compute(self) -> dict[str, Any]:
        """The `spectrum` object (edges, bands, totals, high_frequency_share, ...)."""
        return self.spectrum()

    def spectrum(self) -> dict[str, Any]:
        """The `spectrum` object of the states as they are (no gathering)."""
        real, paired, generated = self._merged()
        if real.count < 2 or self.shape is None:
            raise ValueError(f"VarianceSpectrum needs at least 2 real images, got {real.count}")
        return spectrum_from_moments(
            self.shape, real, paired, generated if generated.count else None, self.bands
        )
