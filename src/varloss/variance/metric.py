"""`VarianceLoss`: a torchmetrics Metric for training and validation loops, DDP-safe.

    metric = VarianceLoss().to(device)
    for x in loader:
        metric.update(x, reconstructed=model.reconstruct(x), generated=model.sample(len(x)))
    metric.compute()  # {"var_real": ..., "variance_loss_reconstructed": ..., "mse": ..., ...}

The states are the float64 moments of `varloss.stats` (count, means, sums of squared deviations,
the real/reconstructed co-moment). Under torch.distributed every rank's states are gathered and
merged with Chan's formula, not summed, so the result equals the single-process one (to rounding).
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from varloss.stats import MomentAccumulator, PairedMomentAccumulator
from varloss.variance.report import VarianceReport, report_from_moments

_SETS = ("real", "reconstructed", "generated")


class VarianceLoss(Metric):
    """Variance of real, reconstructed and generated sets, variance losses and the MSE terms."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in _SETS:
            # dist_reduce_fx=None: gathered states are stacked per rank and merged in `_merged`.
            self.add_state(
                f"{name}_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx=None
            )
            self.add_state(f"{name}_mean", torch.zeros(0, dtype=torch.float64), dist_reduce_fx=None)
            self.add_state(f"{name}_m2", torch.zeros(0, dtype=torch.float64), dist_reduce_fx=None)
        self.add_state("comoment", torch.zeros(0, dtype=torch.float64), dist_reduce_fx=None)

    # -- moments <-> states ------------------------------------------------------------------
    def _accumulator(self, name: str, row: int | None = None) -> MomentAccumulator:
        count, mean, m2 = (getattr(self, f"{name}_{k}") for k in ("count", "mean", "m2"))
        if row is not None:
            count, mean, m2 = count[row], mean[row], m2[row]
        if float(count) == 0:
            return MomentAccumulator()
        return MomentAccumulator(int(round(float(count))), mean.clone(), m2.clone())

    def _paired(self, row: int | None = None) -> PairedMomentAccumulator:
        comoment = self.comoment if row is None else self.comoment[row]
        recon = self._accumulator("reconstructed", row)
        if recon.count == 0:
            return PairedMomentAccumulator()
        return PairedMomentAccumulator(self._accumulator("real", row), recon, comoment.clone())

    def _store(self, name: str, moments: MomentAccumulator) -> None:
        if moments.count:
            setattr(
                self,
                f"{name}_count",
                torch.tensor(
                    float(moments.count), dtype=torch.float64, device=self.real_count.device
                ),
            )
            setattr(self, f"{name}_mean", moments.mean)
            setattr(self, f"{name}_m2", moments.m2)

    def _merged(
        self,
    ) -> tuple[MomentAccumulator, PairedMomentAccumulator | None, MomentAccumulator]:
        """(real, paired or None, generated) moments, merging per-rank rows after a sync."""
        rows = [None] if self.real_count.ndim == 0 else list(range(self.real_count.shape[0]))
        paired, real, generated = (
            PairedMomentAccumulator(),
            MomentAccumulator(),
            MomentAccumulator(),
        )
        for row in rows:
            paired.merge(self._paired(row))
            real.merge(self._accumulator("real", row))
            generated.merge(self._accumulator("generated", row))
        return real, (paired if paired.reconstructed.count else None), generated

    # -- the Metric API ------------------------------------------------------------------------
    def update(
        self,
        real: torch.Tensor,
        reconstructed: torch.Tensor | None = None,
        generated: torch.Tensor | None = None,
    ) -> None:
        """Add a batch of real images and, paired with them, their reconstructions; and/or a batch
        of generated images (any count). Use reconstructions either in every call or in none."""
        has_pairs = float(self.reconstructed_count) > 0
        if float(self.real_count) > 0 and has_pairs != (reconstructed is not None):
            raise ValueError(
                "pass reconstructed images in every update or in none (they pair with real)"
            )
        if reconstructed is not None:
            paired = self._paired().merge(self._batch_paired(real.detach(), reconstructed.detach()))
            self._store("real", paired.real)
            self._store("reconstructed", paired.reconstructed)
            self.comoment = paired.comoment
        elif real is not None:
            self._store("real", self._accumulator("real").merge(self._batch(real.detach())))
        if generated is not None:
            generated = self._batch(generated.detach())
            self._store("generated", self._accumulator("generated").merge(generated))

    def _batch(self, batch: torch.Tensor) -> MomentAccumulator:
        """The moments of one batch (subclasses change the features, e.g. to spectra)."""
        return MomentAccumulator().update(batch)

    def _batch_paired(
        self, real: torch.Tensor, reconstructed: torch.Tensor
    ) -> PairedMomentAccumulator:
        return PairedMomentAccumulator().update(real, reconstructed)

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """Merge another state dict (the `forward`/`merge_state` path) with Chan's formula."""
        other = VarianceLoss()
        for key, value in incoming_state.items():
            setattr(other, key, value)
        mine_real, mine_paired, mine_generated = self._merged()
        real, paired, generated = other._merged()
        if mine_paired is not None or paired is not None:
            merged = (mine_paired or PairedMomentAccumulator()).merge(
                paired or PairedMomentAccumulator()
            )
            self._store("real", merged.real)
            self._store("reconstructed", merged.reconstructed)
            self.comoment = merged.comoment
        else:
            self._store("real", mine_real.merge(real))
        self._store("generated", mine_generated.merge(generated))

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

    def sync_report(self, dims: list[int] | None = None) -> VarianceReport:
        """`compute_report` after gathering every rank's states (when torch.distributed runs)."""
        self.sync()  # a no-op outside torch.distributed
        try:
            return self.compute_report(dims)
        finally:
            if self._is_synced:
                self.unsync()
