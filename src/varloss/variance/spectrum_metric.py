"""`VarianceSpectrum`: the spectrum split as a torchmetrics Metric for loops, DDP-safe.

    metric = VarianceSpectrum(bands=8).to(device)
    for x in loader:
        metric.update(x, reconstructed=model.reconstruct(x), generated=model.sample(len(x)))
    metric.compute()  # the `spectrum` object of `varloss.variance.spectrum`

It is `VarianceLoss` on the frequency features (`frequency_rows`): the same float64 moment states,
gathered and merged with Chan's formula under torch.distributed, so the bands equal the
single-process ones (to rounding). Batches must be images (N x C x H x W or N x H x W).
"""

from __future__ import annotations

from typing import Any

import torch

from varloss.variance.metric import VarianceLoss
from varloss.variance.spectrum import (
    DEFAULT_BANDS,
    check_bands,
    frequency_rows,
    image_shape,
    spectrum_from_moments,
)


class VarianceSpectrum(VarianceLoss):
    """The variance, variance losses and MSE terms of real, reconstructed and generated images,
    split by radial spatial frequency band."""

    def __init__(self, bands: int = DEFAULT_BANDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bands = check_bands(bands)
        self.shape: tuple[int, int, int] | None = None

    def _rows(self, images: torch.Tensor | None) -> torch.Tensor | None:
        if images is None:
            return None
        shape = image_shape(images.shape[1:])
        self.shape = self.shape or shape
        return frequency_rows(images.detach(), self.shape)

    def update(
        self,
        real: torch.Tensor,
        reconstructed: torch.Tensor | None = None,
        generated: torch.Tensor | None = None,
    ) -> None:
        """Like `VarianceLoss.update`, on the images' orthonormal half-spectra."""
        super().update(self._rows(real), self._rows(reconstructed), self._rows(generated))

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
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

    def sync_compute(self) -> dict[str, Any]:
        """`compute` after gathering every rank's states (when torch.distributed runs)."""
        self.sync()  # a no-op outside torch.distributed
        try:
            return self.spectrum()
        finally:
            if self._is_synced:
                self.unsync()
