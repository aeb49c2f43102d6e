"""How much of a variance gap a remedy closes: in total, per frequency band, and in log ratio.

The total (`gap_closed`) counts an overshoot as remaining gap, so it cannot tell variance given
back as structure from variance given back as high-frequency noise. The band numbers can:
`band_gap_closed` is, per radial frequency band of `varloss.variance.spectrum`, the fraction of
that band's gap the remedy closed (signed, so a band that overshoots shows above 1 and a band made
worse below 0), and `spectral_error` is the mean over bands of |log(var_generated / var_real)|
(0 only when every band holds the real variance; a factor of 2 either way in every band gives
log 2 = 0.69).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

GAP_CLOSED_DEFINITION = "1 - |var_real - var_generated| / |var_real - var_generated(prior)|"
BAND_GAP_CLOSED_DEFINITION = (
    "per radial frequency band: (var_generated - var_generated(prior)) / "
    "(var_real - var_generated(prior)); above 1 = overshoot, below 0 = further away"
)
SPECTRAL_ERROR_DEFINITION = "mean over frequency bands of |log(var_generated / var_real)|"


def gap_closed(var_real: float, var_baseline: float, var_corrected: float) -> float | None:
    """Fraction of the baseline variance gap closed: 1 - |gap after| / |gap before|.

    1 means the generated variance equals the real one; overshooting counts as remaining gap;
    negative values mean the remedy moved further away. None when the baseline has no gap.
    """
    before = var_real - var_baseline
    if before == 0 or not math.isfinite(before):
        return None
    return float(1.0 - abs(var_real - var_corrected) / abs(before))


def _bands(spectrum: Mapping[str, Any] | None) -> Sequence[Mapping[str, Any]]:
    return (spectrum or {}).get("bands") or []


def band_gap_closed(
    spectrum: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None
) -> list[float | None] | None:
    """Per band of two `spectrum` objects (a remedy's and the baseline's, same bands): the signed
    fraction of the baseline's gap closed; None for a band with no gap, None without spectra."""
    bands, before = _bands(spectrum), _bands(baseline)
    if not bands or len(bands) != len(before):
        return None
    closed: list[float | None] = []
    for band, base in zip(bands, before, strict=True):
        real, prior, generated = base["var_real"], base["var_generated"], band["var_generated"]
        if real is None or prior is None or generated is None or real == prior:
            closed.append(None)
        else:
            closed.append(float((generated - prior) / (real - prior)))
    return closed


def spectral_error(spectrum: Mapping[str, Any] | None) -> float | None:
    """Mean over bands of |log(var_generated / var_real)|; infinite when a band of the samples
    has no variance where the real images have some, None without spectrum or variance."""
    terms = []
    for band in _bands(spectrum):
        real, generated = band.get("var_real"), band.get("var_generated")
        if real is None or generated is None or real <= 0:
            continue
        terms.append(math.inf if generated <= 0 else abs(math.log(generated / real)))
    return float(sum(terms) / len(terms)) if terms else None
