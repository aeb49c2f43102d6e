"""`match`: decoded prior samples mapped per pixel onto the training data's mean and variance.

A post-hoc calibration of pixel statistics, not a better generative model: it closes the
variance gap by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from varloss.samplers.base import register
from varloss.samplers.image_map import ImageMapSampler

_STD_FLOOR = 1e-6  # a pixel whose generated std is below this does not vary
_STALE_ITERATIONS = 10  # a pixel whose best error did not improve in this many stops iterating


@register
class MatchSampler(ImageMapSampler):
    """Prior samples mapped per pixel onto the training data's mean and variance, then clipped.

    x' = clip(offset + scale * (x - m_gen)), with m_gen and the per-pixel (scale, offset) fitted
    on `n_fit` seeded prior samples. The plain affine solution (offset = m_data, scale = s_data /
    s_gen) loses variance again where clipping bites, so with `clip_aware=True` (the default)
    scale and offset are refined by a per-pixel fixed-point iteration until the *clipped* samples
    have the data's mean and standard deviation. Pixels the decoder never varies (s_gen ~ 0) get
    the data mean.
    """

    name = "match"

    def __init__(
        self,
        n_fit: int = 10000,
        value_range: Sequence[float] | None = (0.0, 1.0),
        clip_aware: bool = True,
        iterations: int = 100,
        tolerance: float = 1e-4,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(n_fit=n_fit, value_range=value_range, seed=seed, batch_size=batch_size)
        self.clip_aware = bool(clip_aware)
        self.iterations = int(iterations)
        self.tolerance = float(tolerance)
        self.data_mean: torch.Tensor | None = None
        self.data_std: torch.Tensor | None = None
        self.generated_mean: torch.Tensor | None = None
        self.generated_std: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        self.offset: torch.Tensor | None = None
        self.fit_residual: float | None = None

    def params(self) -> dict[str, Any]:
        base = super().params()
        return {
            "n_fit": base.pop("n_fit"),
            "value_range": base.pop("value_range"),
            "clip_aware": self.clip_aware,
            "iterations": self.iterations,
            "tolerance": self.tolerance,
            **base,
        }

    def _fit_map(self, generated: torch.Tensor, data: torch.Tensor) -> None:
        self.data_mean = data.mean(0)
        self.data_std = data.var(0, correction=0).sqrt()
        self.generated_mean = generated.mean(0)
        self.generated_std = generated.var(0, correction=0).sqrt()
        varies = self.generated_std > _STD_FLOOR
        ratio = self.data_std / self.generated_std.clamp_min(_STD_FLOOR)
        self.scale = torch.where(varies, ratio, torch.zeros_like(self.data_std))
        self.offset = self.data_mean.clone()
        if self.value_range is not None and self.clip_aware:
            self.scale, self.offset, self.fit_residual = self._fit_clipped(generated)

    def _fit_clipped(self, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Per-pixel (scale, offset) whose clipped samples have the data's mean and std.

        Fixed point: shift the offset by the clipped mean's error, stretch the scale by the
        ratio of standard deviations (both clipped moments grow monotonically in their
        parameter). Each pixel keeps its best iterate (saturated pixels can oscillate); pixels
        within `tolerance` drop out of the active set, and so do pixels whose best error has not
        improved for `_STALE_ITERATIONS` iterations (they oscillate around a target their clipped
        samples cannot reach). The clipped moments of each iterate come from `_ClippedMoments`
        (each pixel's samples sorted once, prefix sums): O(log N) per pixel and iteration instead
        of clipping all N samples (on MNIST 0.3 s instead of 13 s, the same fit to 1e-12).
        """
        shape = self.data_mean.shape
        moments = _ClippedMoments(generated - self.generated_mean, self.value_range)
        target_mean, target_std = self.data_mean.reshape(-1), self.data_std.reshape(-1)
        best_scale, best_offset = self.scale.reshape(-1).clone(), self.offset.reshape(-1).clone()
        best_error = torch.full_like(best_scale, math.inf)
        scale, offset = best_scale.clone(), best_offset.clone()
        active = torch.arange(best_scale.numel())
        stale = torch.zeros(best_scale.numel(), dtype=torch.int64)
        for _ in range(self.iterations + 1):
            mean, std = (values[active] for values in moments(scale, offset))
            error = (target_mean[active] - mean).abs() + (target_std[active] - std).abs()
            better = error < best_error[active]
            improved = active[better]
            stale[active] += 1
            stale[improved] = 0
            best_error[improved] = error[better]
            best_scale[improved], best_offset[improved] = scale[improved], offset[improved]
            offset[active] += target_mean[active] - mean
            ratio = torch.where(
                std > _STD_FLOOR,
                target_std[active] / std.clamp_min(_STD_FLOOR),
                torch.ones_like(std),
            )
            scale[active] = (scale[active] * ratio.clamp(0.5, 2.0)).clamp(max=1e4)
            active = active[
                (best_error[active] > self.tolerance) & (stale[active] < _STALE_ITERATIONS)
            ]
            if active.numel() == 0:
                break
        residual = float(best_error.max())
        return best_scale.reshape(shape), best_offset.reshape(shape), residual

    def _map(self, images: torch.Tensor) -> torch.Tensor:
        """The fitted per-pixel affine map (`transform` clips it to `value_range`)."""
        return self.offset + self.scale * (images - self.generated_mean)

    def _fitted_scalars(self) -> dict[str, Any]:
        return {"max_moment_error": self.fit_residual}

    def _state(self) -> dict[str, torch.Tensor]:
        return {
            "data_mean": self.data_mean,
            "data_std": self.data_std,
            "generated_mean": self.generated_mean,
            "generated_std": self.generated_std,
            "scale": self.scale,
            "offset": self.offset,
        }

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        for key in ("data_mean", "data_std", "generated_mean", "generated_std", "scale", "offset"):
            setattr(self, key, tensors[key])
        self.fit_residual = scalars.get("max_moment_error")


class _ClippedMoments:
    """Mean and std over samples of clip(offset + scale * c) per pixel, for any (scale, offset).

    Each pixel's centred samples c are sorted once, with prefix sums of c and c^2 (float64). For
    scale > 0 the samples below (low - offset) / scale clip to low, those above (high - offset)
    / scale to high, the rest are affine in c: two binary searches and the prefix sums give the
    clipped sum and sum of squares exactly (up to rounding), whatever the number of samples.
    """

    def __init__(self, centred: torch.Tensor, value_range: Sequence[float]) -> None:
        rows = centred.to(torch.float64).reshape(centred.shape[0], -1).T  # pixels x samples
        # numpy's sort: the same order, measured 1.6-2x faster than torch's on 784 x 10,000
        self.sorted = torch.from_numpy(np.sort(rows.contiguous().numpy(), axis=1))
        zero = torch.zeros(rows.shape[0], 1, dtype=torch.float64)
        self.sums = torch.cat([zero, self.sorted.cumsum(1)], 1)
        self.squares = torch.cat([zero, self.sorted.pow(2).cumsum(1)], 1)
        self.low, self.high = float(value_range[0]), float(value_range[1])

    def __call__(
        self, scale: torch.Tensor, offset: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) per pixel of the clipped samples under (scale, offset), one per pixel."""
        low, high, n = self.low, self.high, self.sorted.shape[1]
        varies = scale > 0
        safe = torch.where(varies, scale, torch.ones_like(scale))
        # samples strictly below the low threshold clip to low, those above the high one to high
        below = torch.searchsorted(self.sorted, ((low - offset) / safe)[:, None])
        inside_end = torch.searchsorted(self.sorted, ((high - offset) / safe)[:, None], right=True)
        # a pixel with scale 0 is the constant clip(offset): handled at the end
        below = torch.where(varies[:, None], below, 0)
        inside_end = torch.where(varies[:, None], inside_end, n)
        sum_c = (self.sums.gather(1, inside_end) - self.sums.gather(1, below)).squeeze(1)
        sum_c2 = (self.squares.gather(1, inside_end) - self.squares.gather(1, below)).squeeze(1)
        count = (inside_end - below).squeeze(1).to(torch.float64)
        above = (n - inside_end).squeeze(1).to(torch.float64)
        below = below.squeeze(1).to(torch.float64)
        total = below * low + above * high + count * offset + scale * sum_c
        total_sq = (
            below * low**2
            + above * high**2
            + count * offset**2
            + 2 * offset * scale * sum_c
            + scale**2 * sum_c2
        )
        mean = total / n
        variance = (total_sq / n - mean**2).clamp_min(0.0)
        mean = torch.where(varies, mean, offset.clamp(low, high))
        variance = torch.where(varies, variance, torch.zeros_like(variance))
        return mean, variance.sqrt()
