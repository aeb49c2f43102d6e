"""`temperature`: z ~ N(0, tau^2 I), tau chosen so generated and training pixel variance agree."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from varloss.errors import InputError
from varloss.samplers.base import Sampler, register
from varloss.samplers.latents import (
    check_sample_count,
    decode_codes,
    mean_pixel_variance,
    seeded_generator,
    standard_normal,
)


@register
class TemperatureSampler(Sampler):
    """z ~ N(0, tau^2 I); `fit` picks tau so generated and training pixel variance agree.

    The search uses common random numbers (one fixed, seeded batch of eps), so var(tau) is a
    deterministic, smooth function: a geometric scan brackets the crossing and bisection on
    log(tau) refines it. If no tau in [tau_min, tau_max] reaches the target, the scan point
    closest to it is kept (recorded as `tau_converged = False`).
    """

    name = "temperature"
    draws_prior = True  # tau * N(0, I) codes

    def __init__(
        self,
        tau: float | None = None,
        n_fit: int = 2000,
        tau_min: float = 0.25,
        tau_max: float = 8.0,
        scan_points: int = 16,
        tolerance: float = 1e-4,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if tau is not None and not tau > 0:
            raise InputError(f"tau must be positive, got {tau!r}.")
        if not 0 < tau_min < tau_max:
            raise InputError(
                f"tau_min and tau_max must satisfy 0 < tau_min < tau_max, got {tau_min}, {tau_max}."
            )
        self.tau_given = None if tau is None else float(tau)
        self.n_fit = int(n_fit)
        self.tau_min, self.tau_max = float(tau_min), float(tau_max)
        self.scan_points = int(scan_points)
        self.tolerance = float(tolerance)
        self.tau: float | None = self.tau_given
        self.target_variance: float | None = None
        self.achieved_variance: float | None = None
        self.converged: bool | None = None
        self.trace: list[tuple[float, float]] = []  # (tau, generated variance) per evaluation

    def params(self) -> dict[str, Any]:
        return {
            "tau": self.tau_given,
            "n_fit": self.n_fit,
            "tau_min": self.tau_min,
            "tau_max": self.tau_max,
            "scan_points": self.scan_points,
            "tolerance": self.tolerance,
            **super().params(),
        }

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        self.target_variance = mean_pixel_variance(images)
        if self.tau_given is not None:
            self.tau, self.converged, self.trace = self.tau_given, None, []
            return
        eps = standard_normal(self.n_fit, int(self.latent_dim), seeded_generator(self.seed))
        self.trace = []

        def gap_at(log_tau: float) -> float:
            """Generated minus target variance at tau = exp(log_tau), on the fixed eps."""
            tau = math.exp(log_tau)
            value = mean_pixel_variance(decode_codes(model, tau * eps, self.batch_size))
            self.trace.append((tau, value))
            return value - self.target_variance

        bracket = self._scan(gap_at)
        if bracket is None:
            self.converged = False
        else:
            self.tau, self.converged = self._bisect(gap_at, *bracket), True
        self.achieved_variance = mean_pixel_variance(
            decode_codes(model, self.tau * eps, self.batch_size)
        )

    def _scan(self, gap_at: Any) -> tuple[float, float] | None:
        """Scan log(tau) on a grid for a sign change of the gap; return the bracketing pair.

        Without one, `self.tau` is set to the scan point closest to the target.
        """
        grid = np.linspace(math.log(self.tau_min), math.log(self.tau_max), self.scan_points)
        gaps = []
        for index, log_tau in enumerate(grid):
            gaps.append(gap_at(float(log_tau)))
            if index and gaps[-2] < 0 <= gaps[-1]:
                return float(grid[index - 1]), float(log_tau)
        self.tau = math.exp(float(grid[int(np.argmin(np.abs(gaps)))]))
        return None

    def _bisect(self, gap_at: Any, low: float, high: float) -> float:
        """Bisection on log(tau) until the gap is within `tolerance` of the target variance."""
        relative = self.tolerance * self.target_variance
        for _ in range(60):
            middle = 0.5 * (low + high)
            gap = gap_at(middle)
            if gap < 0:
                low = middle
            else:
                high = middle
            if abs(gap) <= relative or high - low < 1e-9:
                break
        return math.exp(0.5 * (low + high))

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        self._require_model()
        return float(self.tau) * standard_normal(
            check_sample_count(n), int(self.latent_dim), generator
        )

    def _fitted_scalars(self) -> dict[str, Any]:
        return {
            "tau_fitted": self.tau,
            "target_variance": self.target_variance,
            "achieved_variance": self.achieved_variance,
            "tau_converged": self.converged,
            "search_evaluations": len(self.trace),
        }

    def _state(self) -> dict[str, torch.Tensor]:
        trace = torch.tensor(self.trace, dtype=torch.float64).reshape(-1, 2)
        return {"tau": torch.tensor([float(self.tau)], dtype=torch.float64), "search_trace": trace}

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        self.tau = float(tensors["tau"][0])
        self.trace = [tuple(row) for row in tensors["search_trace"].tolist()]
        self.target_variance = scalars.get("target_variance")
        self.achieved_variance = scalars.get("achieved_variance")
        self.converged = scalars.get("tau_converged")
