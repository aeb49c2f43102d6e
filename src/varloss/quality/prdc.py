"""k-NN precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

Each real point i gets a ball of radius r_i = distance to its k-th nearest other real point
(likewise for generated points in recall). With d(i, j) the real-to-generated distances:

    precision = mean_j  1[exists i: d(i, j) < r_i]        (generated inside the real manifold)
    recall    = mean_i  1[exists j: d(i, j) < r'_j]       (real inside the generated manifold)
    density   = mean_j  (1/k) sum_i 1[d(i, j) < r_i]
    coverage  = mean_i  1[min_j d(i, j) < r_i]

Distances are computed in float64 in row blocks, so memory is O(block x N) and a 10k x 10k
comparison never holds the full matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from varloss.errors import InputError

DEFAULT_BLOCK = 1024


def _as_features(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or value.ndim != 2:
        raise InputError(f"{what} must be an N x d array of features.")
    return value.detach().to("cpu", torch.float64)


def _blocks(n: int, block: int) -> range:
    return range(0, n, block)


def knn_radii(features: torch.Tensor, k: int, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """Distance from each point to its k-th nearest *other* point of the same set."""
    n = features.shape[0]
    if not 1 <= k < n:
        raise InputError(f"k-NN radii need 1 <= k < number of points, got k={k}, N={n}.")
    radii = torch.empty(n, dtype=torch.float64)
    for start in _blocks(n, block):
        distances = torch.cdist(features[start : start + block], features)
        # the smallest distance is the point to itself (0); the (k+1)-th smallest is the k-th other
        radii[start : start + block] = distances.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def precision_recall(
    real: Any, generated: Any, *, k: int = 3, block: int = DEFAULT_BLOCK
) -> dict[str, float]:
    """Improved precision and recall of generated features against real features (k=3)."""
    x, y = _as_features(real, "real features"), _as_features(generated, "generated features")
    radii_real, radii_generated = knn_radii(x, k, block), knn_radii(y, k, block)
    inside_real = torch.zeros(y.shape[0], dtype=torch.bool)
    for start in _blocks(y.shape[0], block):
        distances = torch.cdist(y[start : start + block], x)  # generated x real
        inside_real[start : start + block] = (distances < radii_real[None, :]).any(dim=1)
    inside_generated = torch.zeros(x.shape[0], dtype=torch.bool)
    for start in _blocks(x.shape[0], block):
        distances = torch.cdist(x[start : start + block], y)  # real x generated
        inside_generated[start : start + block] = (distances < radii_generated[None, :]).any(dim=1)
    return {
        "precision": float(inside_real.double().mean()),
        "recall": float(inside_generated.double().mean()),
        "k": int(k),
    }


def density_coverage(
    real: Any, generated: Any, *, k: int = 5, block: int = DEFAULT_BLOCK
) -> dict[str, float]:
    """Density and coverage of generated features against real features (k=5)."""
    x, y = _as_features(real, "real features"), _as_features(generated, "generated features")
    radii_real = knn_radii(x, k, block)
    balls_containing = torch.zeros(y.shape[0], dtype=torch.float64)
    for start in _blocks(y.shape[0], block):
        distances = torch.cdist(y[start : start + block], x)
        balls_containing[start : start + block] = (distances < radii_real[None, :]).sum(dim=1)
    covered = torch.zeros(x.shape[0], dtype=torch.bool)
    for start in _blocks(x.shape[0], block):
        nearest = torch.cdist(x[start : start + block], y).min(dim=1).values
        covered[start : start + block] = nearest < radii_real[start : start + block]
    return {
        "density": float(balls_containing.mean() / k),
        "coverage": float(covered.double().mean()),
        "k": int(k),
    }


def prdc(
    real: Any,
    generated: Any,
    *,
    k_precision: int = 3,
    k_density: int = 5,
    block: int = DEFAULT_BLOCK,
) -> dict[str, float]:
    """Precision, recall (k=3), density and coverage (k=5) in one JSON-safe dict."""
    pr = precision_recall(real, generated, k=k_precision, block=block)
    dc = density_coverage(real, generated, k=k_density, block=block)
    return {
        "precision": pr["precision"],
        "recall": pr["recall"],
        "density": dc["density"],
        "coverage": dc["coverage"],
        "k_precision_recall": k_precision,
        "k_density_coverage": k_density,
    }
