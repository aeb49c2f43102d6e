"""`spectral`: decoded prior samples given the real images' power spectrum, channel by channel.

For stationary images the Gaussian optimal-transport map (`ot`) is diagonal in the Fourier basis:
a gain per frequency. Here the gain is per channel c and per radial frequency bin b,

    g(c, b) = sqrt(P_real(c, b) / P_generated(c, b)),

P the variance of the orthonormal 2-D DFT coefficients (the power spectrum of the centred images,
`varloss.variance.fourier`), averaged over the coefficients of the full spectrum whose radius
sqrt(fy^2 + fx^2) (cycles per pixel, `np.fft.fftfreq`) rounds to bin b in steps of 1 / max(H, W).
The map is T(x) = m_real + IDFT(g * DFT(x - m_generated)), m the pixel means; fitted on training
images only. A bin where the decoded samples do not vary (P_generated ~ 0) keeps gain 1: there is
nothing there to scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from varloss.samplers.base import register
from varloss.samplers.image_map import ImageMapSampler
from varloss.variance.fourier import moments
from varloss.variance.spectrum import frequency_layout

_POWER_FLOOR = 1e-12


def radial_bins(height: int, width: int) -> np.ndarray:
    """H x (W//2 + 1) bin index of each `rfft2` coefficient: round(radius * max(H, W))."""
    fy, fx = np.fft.fftfreq(height), np.fft.rfftfreq(width)
    radius = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    return np.rint(radius * max(height, width)).astype(np.int64)


def power_by_bin(images: torch.Tensor) -> torch.Tensor:
    """C x B float64: per channel and radial bin, the mean variance of the orthonormal DFT
    coefficients of `images` (N x C x H x W) over the full spectrum's coefficients in the bin."""
    channels, height, width = (int(s) for s in images.shape[1:])
    shape = (channels, height, width)
    variance = moments(images.to(torch.float64), shape).variance().cpu().numpy()
    # real + imaginary part: the variance of each complex coefficient
    power = variance.reshape(channels, height, width // 2 + 1, 2).sum(-1)
    _, weight = frequency_layout(shape)  # conjugate pairs counted twice
    weight = weight.reshape(channels, height, width // 2 + 1, 2)[0, :, :, 0]
    bins = radial_bins(height, width)
    count = np.bincount(bins.ravel(), weights=weight.ravel())
    sums = np.stack(
        [np.bincount(bins.ravel(), weights=(power[c] * weight).ravel()) for c in range(channels)]
    )
    return torch.from_numpy(sums / np.where(count > 0, count, 1.0))


@register
class SpectralSampler(ImageMapSampler):
    """Decoded prior samples with a per-channel, per-radial-frequency gain sqrt(P_real / P_gen)
    onto the training images' power spectrum and pixel mean."""

    name = "spectral"

    def __init__(
        self,
        n_fit: int = 10000,
        value_range: Sequence[float] | None = (0.0, 1.0),
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(n_fit=n_fit, value_range=value_range, seed=seed, batch_size=batch_size)
        self.real_mean: torch.Tensor | None = None
        self.generated_mean: torch.Tensor | None = None
        self.real_power: torch.Tensor | None = None  # C x B
        self.generated_power: torch.Tensor | None = None
        self.gain: torch.Tensor | None = None  # C x B

    def _fit_map(self, generated: torch.Tensor, data: torch.Tensor) -> None:
        self.real_mean, self.generated_mean = data.mean(0), generated.mean(0)
        self.real_power, self.generated_power = power_by_bin(data), power_by_bin(generated)
        varies = self.generated_power > _POWER_FLOOR
        ratio = self.real_power / self.generated_power.clamp_min(_POWER_FLOOR)
        self.gain = torch.where(varies, ratio.sqrt(), torch.ones_like(ratio))

    def _map(self, images: torch.Tensor) -> torch.Tensor:
        """m_real + IDFT(g * DFT(x - m_generated)), float64 (before clipping)."""
        height, width = images.shape[-2:]
        bins = torch.from_numpy(radial_bins(height, width))
        gain = self.gain[:, bins]  # C x H x (W//2 + 1)
        spectrum = torch.fft.rfft2(images - self.generated_mean, norm="ortho")
        return torch.fft.irfft2(spectrum * gain, s=(height, width), norm="ortho") + self.real_mean

    _TENSORS = ("real_mean", "generated_mean", "real_power", "generated_power", "gain")

    def _state(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key) for key in self._TENSORS}

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        for key in self._TENSORS:
            setattr(self, key, tensors[key])
