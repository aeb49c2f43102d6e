"""The optional splits of `measure`: by spatial frequency (`spectrum`) and principal direction
(`pca`), fed batch by batch from the same streams as the pixel moments (nothing is read twice)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from varloss.variance.pca import DEFAULT_PCA_LIMIT, PCAAccumulator, check_pca
from varloss.variance.report import VarianceReport
from varloss.variance.spectrum import DEFAULT_BANDS, SpectrumAccumulator, check_bands


class Breakdowns:
    """The spectrum and/or PCA accumulators one `measure` call asked for (possibly none)."""

    def __init__(
        self,
        spectrum: bool | int = False,
        pca: int | None = None,
        pca_limit: int = DEFAULT_PCA_LIMIT,
    ) -> None:
        self.parts: dict[str, Any] = {}
        if spectrum is not False and spectrum is not None:
            bands = DEFAULT_BANDS if spectrum is True else check_bands(spectrum)
            self.parts["spectrum"] = SpectrumAccumulator(bands)
        if pca:
            components, limit = check_pca(pca, pca_limit)
            self.parts["pca"] = PCAAccumulator(components, limit)

    def paired(self, real: torch.Tensor, reconstructed: torch.Tensor, dims: Sequence[int]) -> None:
        for part in self.parts.values():
            part.update_paired(real, reconstructed, dims)

    def real(self, real: torch.Tensor, dims: Sequence[int]) -> None:
        for part in self.parts.values():
            part.update_real(real, dims)

    def generated(self, generated: torch.Tensor, dims: Sequence[int]) -> None:
        for part in self.parts.values():
            part.update_generated(generated, dims)

    def attach(self, report: VarianceReport) -> VarianceReport:
        """Put each split's object on the report (`report.spectrum`, `report.pca`)."""
        for name, part in self.parts.items():
            setattr(report, name, part.result())
        return report
