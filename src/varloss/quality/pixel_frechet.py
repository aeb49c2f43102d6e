"""`pixel_frechet`: the Fréchet distance between Gaussians fitted to real and generated images in
the top-K principal basis of the real images (float64).

A sample-quality number that needs no feature extractor, so it exists for every data set. It sees
the mean and the covariance along the K directions in which the real images vary most: a remedy
that adds variance as noise off those directions (or in the wrong ones) gains nothing, one that
puts back the averaged-away covariance closes it. `K` is recorded with every value.
"""

from __future__ import annotations

from typing import Any

import torch

from varloss.quality.frechet import frechet_distance
from varloss.variance.pca import CovarianceAccumulator

DEFAULT_PIXEL_FRECHET_K = 64
PIXEL_FRECHET_DEFINITION = (
    "Fréchet distance between Gaussians fitted to the real and the generated images projected on "
    "the top-K eigenvectors of the real images' pixel covariance (float64)"
)


class PixelFrechet:
    """The real images' top-K basis and Gaussian, fitted once; `distance(images)` per set."""

    def __init__(self, real: torch.Tensor, k: int = DEFAULT_PIXEL_FRECHET_K) -> None:
        rows = real.detach().to("cpu", torch.float64).reshape(real.shape[0], -1)
        covariance = CovarianceAccumulator().update(rows)
        values, vectors = torch.linalg.eigh(covariance.covariance())
        self.k = min(int(k), rows.shape[1])
        self.basis = vectors[:, -self.k :].flip(1)
        self.mean = covariance.mean @ self.basis
        self.covariance = torch.diag(values[-self.k :].flip(0).clamp_min(0.0))

    def distance(self, images: torch.Tensor) -> float:
        """FD between the real Gaussian and one fitted to `images` in the real top-K basis."""
        rows = images.detach().to("cpu", torch.float64).reshape(images.shape[0], -1)
        projected = rows @ self.basis
        centred = projected - projected.mean(0)
        covariance = centred.T @ centred / rows.shape[0]
        return frechet_distance(self.mean, self.covariance, projected.mean(0), covariance).fid

    def settings(self) -> dict[str, Any]:
        return {"pixel_frechet_k": self.k, "pixel_frechet_definition": PIXEL_FRECHET_DEFINITION}
