"""What autoencoder papers report of reconstructions beside varloss's variance loss: PSNR, SSIM
and rFID (the FID of the reconstructions against the real images they reconstruct), streamed
batch by batch as `measure_model` produces the pairs.

- PSNR: 10 log10(1 / MSE_i) of each image in [0, 1] (data range 1), averaged over images, in
  float64; an image reconstructed exactly has no finite PSNR and is left out (counted).
- SSIM: torchmetrics' functional `structural_similarity_index_measure` (Gaussian window 11,
  sigma 1.5, data range 1; images reflect-padded so the map covers every pixel) per image,
  averaged over images; images smaller than the window have none (None, with the reason).
- rFID: both sets' features through one extractor ("domain", "inception", ...), accumulated in
  float64 statistics (`FeatureStatistics`), then `frechet_distance`; the real side may be given
  already computed (`reference_statistics`: cached for named data sets).
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from varloss.errors import InputError
from varloss.quality.extractors import FeatureExtractor
from varloss.quality.frechet import frechet_distance
from varloss.quality.statistics import FeatureStatistics

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _pair(real: torch.Tensor, reconstructed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both batches as float64 N x C x H x W on the CPU; a flat N x D set is compared as 1 x 1 x D
    images (PSNR is defined; SSIM's window does not fit, which `compute` says)."""
    if real.ndim == 2 and real.shape == reconstructed.shape:
        real, reconstructed = (
            batch.reshape(batch.shape[0], 1, 1, -1) for batch in (real, reconstructed)
        )
    if real.shape != reconstructed.shape or real.ndim != 4:
        raise InputError(
            f"reconstructions must match the real images, N x C x H x W each; got "
            f"{list(real.shape)} and {list(reconstructed.shape)}."
        )
    return real.detach().to("cpu", torch.float64), reconstructed.detach().to("cpu", torch.float64)


class ReconstructionQuality:
    """Running PSNR, SSIM and (with an extractor) rFID of (real, reconstructed) batches."""

    def __init__(
        self,
        extractor: FeatureExtractor | None = None,
        real_statistics: FeatureStatistics | None = None,
    ) -> None:
        self.extractor = extractor
        self.given_real = real_statistics is not None
        self.count = 0
        self.exact = 0  # images reconstructed exactly (infinite PSNR)
        self.psnr_sum = 0.0
        self.ssim_sum = 0.0
        self.ssim_reason: str | None = None
        self.real_statistics = real_statistics or FeatureStatistics()
        self.reconstructed_statistics = FeatureStatistics()

    def update(self, real: torch.Tensor, reconstructed: torch.Tensor) -> None:
        """Add a batch of images in [0, 1] and their reconstructions (same shape)."""
        real, reconstructed = _pair(real, reconstructed)
        reconstructed = reconstructed.clamp(0.0, 1.0)
        mse = (real - reconstructed).pow(2).flatten(1).mean(1)
        finite = mse > 0
        self.exact += int((~finite).sum())
        self.psnr_sum += float((-10.0 * torch.log10(mse[finite])).sum())
        self.count += real.shape[0]
        if min(real.shape[-2:]) < SSIM_WINDOW:
            self.ssim_reason = f"images smaller than the SSIM window of {SSIM_WINDOW} pixels"
        elif self.ssim_reason is None:
            ssim = structural_similarity_index_measure(
                reconstructed, real, gaussian_kernel=True, sigma=SSIM_SIGMA,
                kernel_size=SSIM_WINDOW, data_range=1.0, reduction="none",
            )  # fmt: skip
            self.ssim_sum += float(ssim.sum())
        if self.extractor is not None:
            pairs = [(self.reconstructed_statistics, reconstructed)]
            if not self.given_real:
                pairs.append((self.real_statistics, real))
            for statistics, images in pairs:
                statistics.update(self.extractor.features(images.to(torch.float32)))

    def compute(self) -> dict[str, Any]:
        """{psnr, ssim, rfid, rfid_terms, settings} (None where there is no number, and why)."""
        if self.count == 0:
            raise InputError("reconstruction quality needs at least one image pair, got none.")
        finite = self.count - self.exact
        result: dict[str, Any] = {
            "psnr": self.psnr_sum / finite if finite else None,
            "ssim": None if self.ssim_reason else self.ssim_sum / self.count,
            "rfid": None,
            "settings": {
                "n": self.count,
                "psnr": (
                    "mean over images of 10 log10(1 / MSE), data range 1, float64, "
                    "reconstructions clamped to [0, 1]"
                ),
                "psnr_exact_images_left_out": self.exact,
                "ssim": self.ssim_reason
                or f"torchmetrics SSIM, Gaussian window {SSIM_WINDOW}, sigma {SSIM_SIGMA}",
                "rfid_extractor": None if self.extractor is None else self.extractor.info(),
                "rfid_real_statistics": "given (cached)" if self.given_real else "computed",
            },
        }
        if self.extractor is not None and self.count >= 2:
            real, rec = self.real_statistics, self.reconstructed_statistics
            terms = frechet_distance(real.mean, real.covariance(), rec.mean, rec.covariance())
            result["rfid"] = terms.fid
            result["rfid_terms"] = terms.to_dict()
        return result
