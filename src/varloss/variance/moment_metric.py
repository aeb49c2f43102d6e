"""`MomentMetric`: the one moment base of the torchmetrics metrics `VarianceLoss` and
`VarianceSpectrum`, DDP-safe.

It holds what the two share: the float64 moment states of `varloss.stats` (count, means, sums of
squared deviations of the real, reconstructed and generated sets, and the real/reconstructed
co-moment), `update`, the merge of another state dict (the `forward`/`merge_state` path), and the
gather of every rank's states. Under torch.distributed the states are gathered unreduced
(`dist_reduce_fx=None`: stacked per rank) and merged with Chan's formula, not summed, so the result
equals the single-process one (to rounding).

A subclass says which features a batch's moments are taken over (`_batch`, `_batch_paired`:
pixels, or frequency features) and what `compute` makes of the merged moments; the two subclasses
are siblings, neither an instance of the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torchmetrics import Metric

from varloss.stats import MomentAccumulator, PairedMomentAccumulator

_SETS = ("real", "reconstructed", "generated")
_Result = TypeVar("_Result")

# (real, paired or None, generated): the merged moments a subclass's `compute` reads.
Moments = tuple[MomentAccumulator, PairedMomentAccumulator | None, MomentAccumulator]


def _accumulator(
    states: Mapping[str, torch.Tensor], name: str, row: int | None = None
) -> MomentAccumulator:
    """The moments of set `name` in `states` (one rank's `row` after a gather)."""
    count, mean, m2 = (states[f"{name}_{k}"] for k in ("count", "mean", "m2"))
    if row is not None:
        count, mean, m2 = count[row], mean[row], m2[row]
    if float(count) == 0:
        return MomentAccumulator()
    return MomentAccumulator(int(round(float(count))), mean.clone(), m2.clone())


def _paired(states: Mapping[str, torch.Tensor], row: int | None = None) -> PairedMomentAccumulator:
    """The real/reconstructed pair moments in `states` (empty when nothing was reconstructed)."""
    comoment = states["comoment"] if row is None else states["comoment"][row]
    recon = _accumulator(states, "reconstructed", row)
    if recon.count == 0:
        return PairedMomentAccumulator()
    return PairedMomentAccumulator(_accumulator(states, "real", row), recon, comoment.clone())


def merged_moments(states: Mapping[str, torch.Tensor]) -> Moments:
    """(real, paired or None, generated) moments of `states`, merging per-rank rows after a
    gather (a gathered count has one row per rank; an ungathered one is a scalar)."""
    count = states["real_count"]
    rows = [None] if count.ndim == 0 else list(range(count.shape[0]))
    paired, real, generated = PairedMomentAccumulator(), MomentAccumulator(), MomentAccumulator()
    for row in rows:
        paired.merge(_paired(states, row))
        real.merge(_accumulator(states, "real", row))
        generated.merge(_accumulator(states, "generated", row))
    return real, (paired if paired.reconstructed.count else None), generated


class MomentMetric(Metric):
    """Streaming, mergeable moments of real, reconstructed and generated sets (the base of
    `VarianceLoss` and `VarianceSpectrum`; not used alone: `compute` is the subclass's)."""

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

    # -- features: what a subclass measures the moments of ---------------------------------------
    def _batch(self, batch: torch.Tensor) -> MomentAccumulator:
        """The moments of one batch (subclasses change the features, e.g. to spectra)."""
        raise NotImplementedError

    def _batch_paired(
        self, real: torch.Tensor, reconstructed: torch.Tensor
    ) -> PairedMomentAccumulator:
        """The pair moments of one batch of real images and their reconstructions."""
        raise NotImplementedError

    # -- moments <-> states ------------------------------------------------------------------
    def _states(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._defaults}

    def _store(self, name: str, moments: MomentAccumulator) -> None:
        if moments.count:
            device = self.real_count.device
            count = torch.tensor(float(moments.count), dtype=torch.float64, device=device)
            setattr(self, f"{name}_count", count)
            setattr(self, f"{name}_mean", moments.mean)
            setattr(self, f"{name}_m2", moments.m2)

    def _store_paired(self, paired: PairedMomentAccumulator) -> None:
        self._store("real", paired.real)
        self._store("reconstructed", paired.reconstructed)
        self.comoment = paired.comoment

    def _merged(self) -> Moments:
        """(real, paired or None, generated) moments, merging per-rank rows after a sync."""
        return merged_moments(self._states())

    # -- the Metric API ------------------------------------------------------------------------
    def update(
        self,
        real: torch.Tensor,
        reconstructed: torch.Tensor | None = None,
        generated: torch.Tensor | None = None,
    ) -> None:
        """Add a batch of real images and, paired with them, their reconstructions; and/or a batch
        of generated images (any count). Use reconstructions either in every call or in none."""
        states = self._states()
        has_pairs = float(self.reconstructed_count) > 0
        if float(self.real_count) > 0 and has_pairs != (reconstructed is not None):
            raise ValueError(
                "pass reconstructed images in every update or in none (they pair with real)"
            )
        if reconstructed is not None:
            batch = self._batch_paired(real.detach(), reconstructed.detach())
            self._store_paired(_paired(states).merge(batch))
        elif real is not None:
            self._store("real", _accumulator(states, "real").merge(self._batch(real.detach())))
        if generated is not None:
            batch = self._batch(generated.detach())
            self._store("generated", _accumulator(states, "generated").merge(batch))

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """Merge another state dict (the `forward`/`merge_state` path) with Chan's formula."""
        mine_real, mine_paired, mine_generated = self._merged()
        real, paired, generated = merged_moments(incoming_state)
        if mine_paired is not None or paired is not None:
            merged = (mine_paired or PairedMomentAccumulator()).merge(
                paired or PairedMomentAccumulator()
            )
            self._store_paired(merged)
        else:
            self._store("real", mine_real.merge(real))
        self._store("generated", mine_generated.merge(generated))

    def _synced(self, result: Callable[[], _Result], **sync_options: Any) -> _Result:
        """`result()` after gathering every rank's states (when torch.distributed runs);
        `sync_options` go to `Metric.sync` (process_group, dist_sync_fn, ...)."""
        self.sync(**sync_options)  # a no-op outside torch.distributed
        try:
            return result()
        finally:
            if self._is_synced:
                self.unsync()

    def sync_compute(self, **sync_options: Any) -> Any:
        """`compute` after gathering every rank's states (when torch.distributed runs), without
        torchmetrics' cached value: every rank must call it, as every rank takes part.
        `sync_options` go to `Metric.sync` (process_group, dist_sync_fn, ...)."""
        return self._synced(lambda: type(self).compute(self), **sync_options)
