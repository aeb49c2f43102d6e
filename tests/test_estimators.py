"""The estimators beside FID: the Fréchet step by symmetric eigendecomposition against scipy's
sqrtm, KID (unbiased MMD², cubic kernel, torch-fidelity's subsets) against sklearn's kernel and
the definition, and FID∞ (Chong & Forsyth) on samples whose FID∞ is known to be 0."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from sklearn.metrics.pairwise import polynomial_kernel
from torch import nn

from varloss.errors import InputError
from varloss.quality import fid
from varloss.quality.fid_infinity import fid_infinity
from varloss.quality.frechet import frechet_distance
from varloss.quality.kid import kernel_inception_distance, polynomial_mmd2


def covariances(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, 2 * dim))
    return a @ a.T / dim, b @ b.T / (2 * dim) + 0.1 * np.eye(dim)


def scipy_fid(mu1, sigma1, mu2, sigma2) -> float:
    """The pytorch-fid / TTUR formula with scipy's general matrix square root."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    root = root.real if np.iscomplexobj(root) else root
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


@pytest.mark.parametrize("dim", [64, pytest.param(2048, marks=pytest.mark.slow)])
def test_frechet_by_eigendecomposition_matches_scipy_sqrtm(dim) -> None:
    sigma1, sigma2 = covariances(dim, dim)
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = scipy_fid(mu1, sigma1, mu2, sigma2)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2).fid
    assert ours == pytest.approx(expected, rel=1e-8, abs=1e-8 * dim)


def torch_fidelity_kid(x, y, subsets, size, seed=2020) -> tuple[float, float]:
    """The definition, with sklearn's kernel and explicit off-diagonal masks."""
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        a = x[rng.choice(len(x), size, replace=False)]
        b = y[rng.choice(len(y), size, replace=False)]
        k_aa, k_bb, k_ab = (
            polynomial_kernel(p, q, degree=3, coef0=1) for p, q in ((a, a), (b, b), (a, b))
        )
        off = ~np.eye(size, dtype=bool)
        values.append(k_aa[off].mean() + k_bb[off].mean() - 2 * k_ab.mean())
    return float(np.mean(values)), float(np.std(values))


def test_kid_matches_the_definition_with_sklearn_kernels() -> None:
    rng = np.random.default_rng(1)
    generated, real = rng.normal(0.3, 1, (70, 16)), rng.normal(0, 1, (90, 16))
    result = kernel_inception_distance(generated, real, subsets=7, subset_size=50)
    mean, std = torch_fidelity_kid(generated, real, 7, 50)
    assert result["kid"] == pytest.approx(mean, rel=1e-10)
    assert result["kid_std"] == pytest.approx(std, rel=1e-10)
    assert result["settings"]["subset_size"] == 50 and result["settings"]["seed"] == 2020
    small = kernel_inception_distance(generated, real, subsets=2)  # subsets of the smaller N
    assert small["settings"]["subset_size"] == 70


def test_kid_is_unbiased_where_fid_is_not() -> None:
    """Same distribution: the unbiased MMD² averages to 0 (within its spread)."""
    rng = np.random.default_rng(2)
    same = [polynomial_mmd2(rng.normal(size=(40, 8)), rng.normal(size=(40, 8))) for _ in range(300)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    shifted = polynomial_mmd2(rng.normal(size=(40, 8)), rng.normal(1.0, 1, size=(40, 8)))
    assert shifted > 10 * np.std(same)
    with pytest.raises(InputError, match="one size"):
        polynomial_mmd2(np.zeros((3, 2)), np.zeros((4, 2)))


def test_fid_infinity_removes_the_one_over_n_bias() -> None:
    """Samples of the real distribution itself: FID(N) ~ c / N > 0, FID∞ ~ 0."""
    dim, n = 12, 4000
    rng = np.random.default_rng(3)
    mean, covariance = np.zeros(dim), np.diag(np.linspace(0.5, 2.0, dim))
    generated = rng.multivariate_normal(mean, covariance, size=n)
    result = fid_infinity(mean, covariance, generated, points=8)
    fids, sizes = np.array(result["fids"]), np.array(result["sizes"])
    assert sizes[0] == n // 2 and sizes[-1] == n and len(sizes) == 8
    assert fids[-1] > 0 and result["slope"] > 0
    assert abs(result["fid_infinity"]) < 0.25 * fids[-1]
    slope, intercept = np.polyfit(1 / sizes, fids, 1)
    assert result["fid_infinity"] == pytest.approx(intercept, rel=1e-12)
    np.testing.assert_allclose(
        fids[-1], frechet_distance(mean, covariance, generated.mean(0), np.cov(generated.T)).fid
    )
    with pytest.raises(InputError, match="3 distinct sample sizes"):
        fid_infinity(mean, covariance, generated[:3])


def test_fid_reports_kid_and_fid_infinity() -> None:
    rng = np.random.default_rng(4)
    real, generated = rng.uniform(0, 1, (300, 1, 3, 3)), rng.uniform(0, 0.9, (300, 1, 3, 3))

    result = fid(real, generated, features=nn.Flatten(), kid=True, fid_infinity=True)
    features_real, features_generated = real.reshape(300, -1), generated.reshape(300, -1)
    mean, std = torch_fidelity_kid(features_generated, features_real, 100, 300)
    assert result["kid"] == pytest.approx(mean, rel=1e-9)
    assert result["kid_std"] == pytest.approx(std, rel=1e-9)
    assert result["fid_infinity"] is not None and result["fid_infinity_fit"]["sizes"][-1] == 300
    assert result["settings"]["fid_infinity"]["points"] == 15
