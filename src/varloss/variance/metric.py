"""`VarianceLoss`: a torchmetrics Metric for training and validation loops, DDP-safe.

    metric = VarianceLoss().to(device)
    for x in loader:
        metric.update(x, reconstructed=model.reconstruct(x), generated=model.sample(len(x)))
    metric.compute()  # {"var_real": ..., "variance_loss_reconstructed": ..., "mse": ..., ...}

The states, `update`, the merge and the gather are the moment base's (`MomentMetric`, shared with
`VarianceSpectrum`, its sibling): the float64 moments of `varloss.stats` (count, means, sums of
squared deviations, the real/reconstructed co-moment). Under torch.distributed every rank's states
are gathered and merged with Chan's formula, not summed, so the result equals the single-process
one (to rounding). Here the moments are taken over the pixels.
"""

from __future__ import annotations

from typing import Any

import torch

from varloss.stats import MomentAccumulator, PairedMomentAccumulator
from varloss.variance.moment_metric import MomentMetric
from varloss.variance.report import VarianceReport, report_from_moments


class VarianceLoss(MomentMetric):
    """Variance of real, reconstructed and generated sets, variance losses and the MSE terms."""

    def _batch(self, batch: torch.Tensor) -> MomentAccumulator:
        return MomentAccumulator().update(batch)

    def _batch_paired(
        self, real: torch.Tensor, reconstructed: torch.Tensor
    ) -> PairedMomentAccumulator:
        return PairedMomentAccumulator().update(real, reconstructed)

    def compute_report(self, dims: list[int] | None = None) -> VarianceReport:
        """The merged moments as a `VarianceReport` (maps shaped `dims`)."""
        real, paired, generated = self._merged()
        if real.count < 2:
            raise ValueError(f"VarianceLoss needs at least 2 real samples, got {real.count}")
        dims = dims or [real.mean.numel()]
        return report_from_moments(dims, real, paired, generated if generated.count else None)

    def compute(self) -> dict[str, Any]:
        """The measure keys (var_real, variance_loss_reconstructed, mse, bias2, cov_term, ...)."""
        report = self.compute_report()
        result = report.to_dict()
        result.pop("settings", None)
        return result

    def sync_report(self, dims: list[int] | None = None, **sync_options: Any) -> VarianceReport:
        """`compute_report` after gathering every rank's states (when torch.distributed runs);
        `sync_options` go to `Metric.sync` (process_group, dist_sync_fn, ...)."""
        return self._synced(lambda: self.compute_report(dims), **sync_options)
