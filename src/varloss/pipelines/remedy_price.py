"""The price of a remedy that acts on decoded images: what it does to reconstructions.

A decoder that outputs a conditional mean loses exactly its MSE in variance; a map that gives the
variance back to its outputs must move them away from that mean, so applied to the test
reconstructions it raises their MSE. Blau & Michaeli (CVPR 2018) bound the MSE at perfect
perception by twice the MMSE; the decoder's own reconstruction MSE stands in for the MMSE (it is
an upper bound of it), so `2 x mse_before` is marked on the curve.

Reconstructions follow the `mean` protocol (decode(mu), `varloss.variance.protocol`), so they
need no random draws. Latent-space remedies leave reconstructions untouched: their price is
reported as null, with the reason.
"""

from __future__ import annotations

from typing import Any

import torch

from varloss.quality.pixel_frechet import PixelFrechet
from varloss.samplers import Sampler, decode_codes, mean_pixel_variance

CURVE_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
LATENT_PRICE_REASON = "acts on latent codes, not on decoded images: reconstructions are unchanged"
PRICE_DEFINITION = (
    "the remedy's map applied to the test reconstructions decode(mu): reconstruction_mse_before "
    "and _after are mean squared errors against the test images, variance_regained = "
    "var(mapped reconstructions) - var(reconstructions) (mean per-pixel variance)"
)


@torch.no_grad()
def mean_reconstructions(model: Any, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """decode(mu) of `images` in batches (the `mean` protocol), float32 CPU."""
    parts = [
        model.reconstruct(images[start : start + batch_size]).detach().to("cpu", torch.float32)
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(parts)


def _mse(images: torch.Tensor, other: torch.Tensor) -> float:
    return float((images.to(torch.float64) - other.to(torch.float64)).pow(2).mean())


def price_before(test_images: torch.Tensor, reconstructed: torch.Tensor) -> tuple[float, float]:
    """(MSE, mean per-pixel variance) of the unmapped reconstructions: the same for every remedy,
    so `varloss correct` computes them once and hands them to `price`."""
    return _mse(test_images, reconstructed), mean_pixel_variance(reconstructed)


def price(
    sampler: Sampler,
    test_images: torch.Tensor,
    reconstructed: torch.Tensor,
    before: tuple[float, float] | None = None,
) -> dict:
    """The row entries of the price: MSE before and after the map, variance regained; null with
    `price_reason` for a sampler that does not act on decoded images. `before`: `price_before`
    of these reconstructions, when already computed."""
    mse_before, variance_before = before or price_before(test_images, reconstructed)
    if not sampler.acts_on_images:
        return {
            "reconstruction_mse_before": mse_before,
            "reconstruction_mse_after": None,
            "variance_regained": None,
            "price_reason": LATENT_PRICE_REASON,
        }
    mapped = sampler.transform(reconstructed)
    return {
        "reconstruction_mse_before": mse_before,
        "reconstruction_mse_after": _mse(test_images, mapped),
        "variance_regained": mean_pixel_variance(mapped) - variance_before,
        "price_reason": None,
    }


def distortion_perception_curve(
    sampler: Sampler,
    codes: torch.Tensor,
    test_images: torch.Tensor,
    reconstructed: torch.Tensor,
    frechet: PixelFrechet,
    strengths: tuple[float, ...] = CURVE_STRENGTHS,
) -> list[dict[str, float]]:
    """Per strength (0 identity .. 1 full map): the reconstructions' MSE, and the samples'
    (`codes` decoded, then mapped) `pixel_frechet` and variance kept (var / var of the test)."""
    decoded = decode_codes(sampler._require_model(), codes, sampler.batch_size)
    var_real = mean_pixel_variance(test_images)
    points = []
    for strength in strengths:
        samples = sampler.transform(decoded, strength)
        points.append(
            {
                "strength": float(strength),
                "reconstruction_mse": _mse(test_images, sampler.transform(reconstructed, strength)),
                "pixel_frechet": frechet.distance(samples),
                "variance_kept": mean_pixel_variance(samples) / var_real if var_real else None,
            }
        )
    return points
