"""`ot`: decoded prior samples moved by the Gaussian optimal-transport map onto the real images.

Between N(m_g, S_g) and N(m_r, S_r) the W2-optimal map is affine, x -> m_r + A (x - m_g) with

    A = S_g^{-1/2} (S_g^{1/2} S_r S_g^{1/2})^{1/2} S_g^{-1/2}

(symmetric positive definite; A S_g A = S_r). Freirich, Michaeli & Meir (NeurIPS 2021) show it is
the remedy the distortion-perception tradeoff asks for: it gives back the covariance a conditional
-mean decoder averaged away, at an MSE price of at most twice the MMSE on reconstructions
(Blau & Michaeli). A full pixel covariance is D x D, so the map acts in the top-K principal basis
V of the training images' covariance, fitted on training images only. The residual outside the
basis, (I - V V')(x - m_g), is handled explicitly: with `residual="scaled"` (the default) it is
multiplied by one scalar so its total variance equals the training images' residual variance
(trace outside the basis); `residual="kept"` leaves it as decoded. So

    T(x) = m_r + V A V'(x - m_g) + s (I - V V')(x - m_g).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from varloss.errors import InputError
from varloss.samplers.base import register
from varloss.samplers.image_map import ImageMapSampler
from varloss.variance.pca import CovarianceAccumulator

_EIGEN_FLOOR = 1e-12  # relative: eigenvalues below this times the largest count as zero


def _psd_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
    """matrix^power of a symmetric PSD float64 matrix through its eigendecomposition; negative
    powers invert only the eigenvalues above the relative floor (a pseudo-inverse)."""
    values, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.T))
    floor = _EIGEN_FLOOR * float(values.abs().max().clamp_min(1e-300))
    kept = values > floor
    safe = torch.where(kept, values, torch.ones_like(values))
    powered = torch.where(kept, safe**power, torch.zeros_like(values))
    return (vectors * powered) @ vectors.T


def gaussian_transport_map(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix A of the W2-optimal map from N(., source) to N(., target), float64:
    A = S^{-1/2} (S^{1/2} T S^{1/2})^{1/2} S^{-1/2}, so A source A = target."""
    source, target = source.to(torch.float64), target.to(torch.float64)
    if source.ndim != 2 or source.shape[0] != source.shape[1] or source.shape != target.shape:
        raise InputError(
            f"gaussian_transport_map needs two square covariances of one size, got "
            f"{tuple(source.shape)} and {tuple(target.shape)}."
        )
    root, inverse_root = _psd_power(source, 0.5), _psd_power(source, -0.5)
    middle = _psd_power(root @ target @ root, 0.5)
    transport = inverse_root @ middle @ inverse_root
    return 0.5 * (transport + transport.T)


@register
class OTSampler(ImageMapSampler):
    """The Gaussian optimal-transport map from decoded prior samples to the training images, in
    the training images' top-`components` principal basis, the residual `scaled` or `kept`."""

    name = "ot"
    RESIDUALS: ClassVar[tuple[str, ...]] = ("scaled", "kept")

    def __init__(
        self,
        components: int = 64,
        residual: str = "scaled",
        n_fit: int = 10000,
        value_range: Sequence[float] | None = (0.0, 1.0),
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(n_fit=n_fit, value_range=value_range, seed=seed, batch_size=batch_size)
        if isinstance(components, bool) or int(components) < 1:
            raise InputError(f"components must be a positive integer, got {components!r}.")
        if residual not in self.RESIDUALS:
            raise InputError(f"residual must be one of {list(self.RESIDUALS)}, got {residual!r}.")
        self.components = int(components)
        self.residual = residual
        self.real_mean: torch.Tensor | None = None
        self.generated_mean: torch.Tensor | None = None
        self.basis: torch.Tensor | None = None  # D x K, the real covariance's top eigenvectors
        self.real_covariance: torch.Tensor | None = None  # K x K in the basis (diagonal)
        self.generated_covariance: torch.Tensor | None = None
        self.transport: torch.Tensor | None = None  # K x K, A
        self.residual_scale: float | None = None
        self.residual_real: float | None = None
        self.residual_generated: float | None = None

    def params(self) -> dict[str, Any]:
        return {"components": self.components, "residual": self.residual, **super().params()}

    def _fit_map(self, generated: torch.Tensor, data: torch.Tensor) -> None:
        rows, fit_rows = data.reshape(data.shape[0], -1), generated.reshape(generated.shape[0], -1)
        k = min(self.components, rows.shape[1])
        real = CovarianceAccumulator().update(rows)
        values, vectors = torch.linalg.eigh(real.covariance())
        self.basis = vectors[:, -k:].flip(1).contiguous()  # the top k, largest first
        self.real_mean = real.mean.reshape(data.shape[1:])
        self.real_covariance = torch.diag(values[-k:].flip(0).clamp_min(0.0))
        self.generated_mean = fit_rows.mean(0).reshape(data.shape[1:])
        centred = fit_rows - fit_rows.mean(0)
        projected = centred @ self.basis
        self.generated_covariance = projected.T @ projected / fit_rows.shape[0]
        self.transport = gaussian_transport_map(self.generated_covariance, self.real_covariance)
        # variance outside the basis: the total minus the part inside
        self.residual_real = float(torch.trace(real.covariance()) - values[-k:].sum())
        total_generated = float(centred.pow(2).sum()) / fit_rows.shape[0]
        self.residual_generated = total_generated - float(torch.trace(self.generated_covariance))
        self.residual_scale = 1.0
        if self.residual == "scaled":
            ratio = (
                self.residual_real / self.residual_generated if self.residual_generated > 0 else 0
            )
            self.residual_scale = max(ratio, 0.0) ** 0.5

    def _map(self, images: torch.Tensor) -> torch.Tensor:
        """m_r + V A V'(x - m_g) + s (I - V V')(x - m_g), float64 (before clipping)."""
        centred = (images - self.generated_mean).reshape(images.shape[0], -1)
        inside = centred @ self.basis
        outside = centred - inside @ self.basis.T
        moved = inside @ self.transport @ self.basis.T + self.residual_scale * outside
        return moved.reshape(images.shape) + self.real_mean

    def _fitted_scalars(self) -> dict[str, Any]:
        return {
            "components_used": None if self.basis is None else int(self.basis.shape[1]),
            "residual_scale": self.residual_scale,
            "residual_variance_real": self.residual_real,
            "residual_variance_generated": self.residual_generated,
        }

    _TENSORS = (
        "real_mean",
        "generated_mean",
        "basis",
        "real_covariance",
        "generated_covariance",
        "transport",
    )

    def _state(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key) for key in self._TENSORS}

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        for key in self._TENSORS:
            setattr(self, key, tensors[key])
        self.residual_scale = scalars.get("residual_scale")
        self.residual_real = scalars.get("residual_variance_real")
        self.residual_generated = scalars.get("residual_variance_generated")
