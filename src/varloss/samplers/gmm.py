"""`gmm`: a Gaussian mixture (scikit-learn EM) on the training codes mu, sampled with torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from varloss.errors import InputError
from varloss.samplers.base import Sampler, register
from varloss.samplers.latents import check_sample_count

COVARIANCE_TYPES = ("full", "diag")


@register
class GMMSampler(Sampler):
    """A Gaussian mixture on the training codes mu (scikit-learn EM), sampled with torch.

    The fitted weights, means and covariances are saved as safetensors (no pickled estimator);
    sampling draws a component, then mean + cholesky(cov) @ eps, from the caller's generator.
    """

    name = "gmm"
    fits_posterior = True  # on the training codes mu

    def __init__(
        self,
        n_components: int = 10,
        covariance_type: str = "full",
        max_iter: int = 200,
        reg_covar: float = 1e-6,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if int(n_components) < 1:
            raise InputError(f"n_components must be a positive integer, got {n_components!r}.")
        if covariance_type not in COVARIANCE_TYPES:
            raise InputError(
                f"covariance_type must be one of {list(COVARIANCE_TYPES)}, got {covariance_type!r}."
            )
        self.n_components = int(n_components)
        self.covariance_type = covariance_type
        self.max_iter = int(max_iter)
        self.reg_covar = float(reg_covar)
        self.weights: torch.Tensor | None = None
        self.means: torch.Tensor | None = None
        self.covariances: torch.Tensor | None = None  # always full matrices, K x D x D
        self.converged: bool | None = None
        self.log_likelihood: float | None = None

    def params(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "max_iter": self.max_iter,
            "reg_covar": self.reg_covar,
            **super().params(),
        }

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        # Imported here: sklearn.mixture takes ~1.3 s to import, paid only by a gmm fit.
        from sklearn.mixture import GaussianMixture
        from threadpoolctl import threadpool_limits  # installed with scikit-learn

        mu, _ = self.shared.encoded(self.batch_size)  # shared with the second stage
        if mu.shape[0] < self.n_components:
            raise InputError(
                f"gmm needs at least n_components={self.n_components} training images, "
                f"got {mu.shape[0]}."
            )
        mixture = GaussianMixture(
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            max_iter=self.max_iter,
            reg_covar=self.reg_covar,
            random_state=self.seed,
        )
        codes = mu.numpy()
        # EM on codes of a few dimensions is a stream of tiny matrix products, which a
        # multi-threaded BLAS only slows down: one BLAS thread gave the same mixture to the bit
        # 7x faster (MNIST codes, 60,000 x 8, 10 components, 2 shared cores).
        with threadpool_limits(limits=1, user_api="blas"):
            mixture.fit(codes)
            self.log_likelihood = float(mixture.score(codes))
        covariances = np.asarray(mixture.covariances_, dtype=np.float64)
        if self.covariance_type == "diag":
            covariances = np.stack([np.diag(row) for row in covariances])
        self.weights = torch.from_numpy(np.asarray(mixture.weights_, dtype=np.float64))
        self.means = torch.from_numpy(np.asarray(mixture.means_, dtype=np.float64))
        self.covariances = torch.from_numpy(covariances)
        self.converged = bool(mixture.converged_)

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        self._require_model()
        n = check_sample_count(n)
        components = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        cholesky = torch.linalg.cholesky(self.covariances)
        codes = self.means[components] + (cholesky[components] @ eps.unsqueeze(-1)).squeeze(-1)
        return codes.to(torch.float32)

    def _fitted_scalars(self) -> dict[str, Any]:
        return {"gmm_converged": self.converged, "gmm_mean_log_likelihood": self.log_likelihood}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        self.weights = tensors["weights"]
        self.means = tensors["means"]
        self.covariances = tensors["covariances"]
        self.converged = scalars.get("gmm_converged")
        self.log_likelihood = scalars.get("gmm_mean_log_likelihood")
