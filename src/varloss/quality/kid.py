"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial
kernel k(x, y) = (x·y / d + 1)^3, averaged over random subsets as torch-fidelity defines them.

torch-fidelity's definition, kept here so numbers agree: `subsets` (100) rounds; in each, a
subset of `subset_size` (1000) rows is drawn without replacement from the first set
(torch-fidelity's input1, the generated images) and then from the second (the real images) with
one `numpy.random.RandomState(seed)` (seed 2020); the unbiased estimate of each round is

    MMD² = (sum_{i != j} k(x_i, x_j) + sum_{i != j} k(y_i, y_j)) / (m (m - 1))
           - 2 sum_{i, j} k(x_i, y_j) / m²,

and KID is their mean, reported with their (population) standard deviation. Unlike FID, the
estimate is unbiased at any sample size, so small sets compare fairly. When a set has fewer rows
than `subset_size`, the subsets take all of the smaller set's count (recorded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from varloss.errors import InputError

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_DEGREE = 3
KID_COEF0 = 1.0
KID_SEED = 2020


def _rows(features: Any, what: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise InputError(f"{what} must be N x d features with N >= 2, got shape {array.shape}.")
    return array


def polynomial_mmd2(
    x: np.ndarray,
    y: np.ndarray,
    degree: int = KID_DEGREE,
    gamma: float | None = None,
    coef0: float = KID_COEF0,
) -> float:
    """Unbiased MMD² of two equal-size samples under (gamma x·y + coef0)^degree, gamma = 1/d."""
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise InputError(
            f"unbiased MMD² needs two samples of one size >= 2, got {m} and {y.shape[0]}."
        )
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx = (x @ x.T * gamma + coef0) ** degree
    k_yy = (y @ y.T * gamma + coef0) ** degree
    k_xy = (x @ y.T * gamma + coef0) ** degree
    within = (k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))
    return float(within / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    generated: Any,
    real: Any,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    degree: int = KID_DEGREE,
    gamma: float | None = None,
    coef0: float = KID_COEF0,
    seed: int = KID_SEED,
) -> dict[str, Any]:
    """KID of `generated` against `real` features (N x d each): {kid, kid_std, settings}."""
    first, second = _rows(generated, "generated features"), _rows(real, "real features")
    if first.shape[1] != second.shape[1]:
        raise InputError(
            f"KID needs features of one dimension, got {first.shape[1]} and {second.shape[1]}."
        )
    if int(subsets) < 1:
        raise InputError(f"KID subsets must be a positive integer, got {subsets!r}.")
    size = int(min(subset_size, first.shape[0], second.shape[0]))
    rng = np.random.RandomState(seed)
    values = np.zeros(int(subsets))
    for index in range(int(subsets)):
        x = first[rng.choice(first.shape[0], size, replace=False)]
        y = second[rng.choice(second.shape[0], size, replace=False)]
        values[index] = polynomial_mmd2(x, y, degree, gamma, coef0)
    return {
        "kid": float(values.mean()),
        "kid_std": float(values.std()),
        "settings": {
            "subsets": int(subsets),
            "subset_size": size,
            "kernel": f"(x.y * {'1/d' if gamma is None else gamma} + {coef0:g})^{degree}",
            "estimator": "unbiased MMD^2 (torch-fidelity's subsets)",
            "seed": int(seed),
        },
    }
