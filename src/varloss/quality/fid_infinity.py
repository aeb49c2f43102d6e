"""FID∞ (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to find
them"): FID is biased upward by a term that shrinks like 1/N in the number N of generated images,
so FID is computed at several N and a line in 1/N is fitted; its intercept, FID at N = ∞, is a
number that does not depend on how many samples a paper happened to draw.

As in the authors' code: `points` (15) sample sizes evenly spaced from `smallest` (5000, or half
the set when it has fewer than 10,000 images) to all N; at each size the generated features are
shuffled (one seeded generator) and the first N used against the fixed real statistics; ordinary
least squares of FID on 1/N. The real covariance's square root is computed once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from varloss.errors import InputError
from varloss.quality.frechet import frechet_distance, psd_sqrt

FID_INFINITY_POINTS = 15
FID_INFINITY_SMALLEST = 5000
FID_INFINITY_SEED = 0


def fid_infinity(
    real_mean: Any,
    real_covariance: Any,
    generated: Any,
    *,
    points: int = FID_INFINITY_POINTS,
    smallest: int | None = None,
    seed: int = FID_INFINITY_SEED,
) -> dict[str, Any]:
    """{fid_infinity, slope, sizes, fids, settings} of `generated` features (N x d) against the
    real (mean, covariance). `smallest` defaults to min(5000, N // 2)."""
    if isinstance(generated, torch.Tensor):
        generated = generated.detach().to("cpu", torch.float64).numpy()
    features = np.asarray(generated, dtype=np.float64)
    n = features.shape[0]
    smallest = min(FID_INFINITY_SMALLEST, n // 2) if smallest is None else int(smallest)
    sizes = np.unique(np.linspace(smallest, n, int(points)).astype(np.int64))
    if features.ndim != 2 or smallest < 2 or sizes.size < 3:
        raise InputError(
            f"FID∞ needs N x d generated features with at least 3 distinct sample sizes of 2 or "
            f"more between {smallest} and N, got shape {features.shape}."
        )
    mean = np.asarray(real_mean, dtype=np.float64)
    covariance = np.asarray(real_covariance, dtype=np.float64)
    root = psd_sqrt(0.5 * (covariance + covariance.T))
    rng = np.random.default_rng(seed)
    fids = []
    for size in sizes:
        chosen = features[rng.permutation(n)[:size]]
        terms = frechet_distance(
            mean, covariance, chosen.mean(axis=0), np.cov(chosen, rowvar=False), real_root=root
        )
        fids.append(terms.fid)
    slope, intercept = np.polyfit(1.0 / sizes, np.asarray(fids), 1)
    return {
        "fid_infinity": float(intercept),
        "slope": float(slope),
        "sizes": [int(s) for s in sizes],
        "fids": [float(f) for f in fids],
        "settings": {
            "points": int(points),
            "smallest": int(smallest),
            "seed": int(seed),
            "fit": "least squares of FID on 1/N; FID∞ is the intercept (Chong & Forsyth 2020)",
        },
    }
