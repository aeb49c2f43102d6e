"""`measure(real, reconstructed, generated)`: how much variance a model loses, and why.

Inputs are anything `varloss.data.inputs.open_source` accepts (arrays, tensors, iterables of
batches, files, image folders, data sets), converted by `varloss.data.to_images`, the one rule.
Everything streams through `varloss.stats` in float64, so memory stays O(D) for paths and
iterables. When two sets are on visibly different value ranges (say [0, 1] and [-1, 1]) measure
stops and asks for the range to be declared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from varloss._version import __version__
from varloss.data.convert import ValueRange, check_value_range, shape_text
from varloss.data.inputs import CheckedStream, Source, open_source
from varloss.errors import InputError
from varloss.stats import MomentAccumulator, PairedMomentAccumulator
from varloss.variance.breakdown import Breakdowns
from varloss.variance.pca import DEFAULT_PCA_LIMIT
from varloss.variance.report import VarianceReport, report_from_moments

SET_NAMES = ("real", "reconstructed", "generated")

__all__ = ["SET_NAMES", "Source", "ValueRange", "measure", "normalise_ranges"]


def _aligned(
    a: Iterator[torch.Tensor], b: Iterator[torch.Tensor]
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Pairs of equally long row blocks from two batch streams that may be split differently."""
    rest_a = rest_b = None
    while True:
        if rest_a is None or len(rest_a) == 0:
            rest_a = next(a, None)
        if rest_b is None or len(rest_b) == 0:
            rest_b = next(b, None)
        if rest_a is None or rest_b is None:
            # drain the longer stream so that a count mismatch can be reported exactly
            for _ in a:
                pass
            for _ in b:
                pass
            return
        k = min(len(rest_a), len(rest_b))
        yield rest_a[:k], rest_b[:k].to(rest_a.device)
        rest_a, rest_b = rest_a[k:], rest_b[k:]


def _range_kind(low: float, high: float) -> str | None:
    """The conventional value range a set appears to use, or None when it is not clear."""
    if low >= -0.05 and high <= 1.05:
        return "[0, 1]"
    if -1.05 <= low < -0.5 and high <= 1.05:
        return "[-1, 1]"
    if low >= -0.5 and 2.0 < high <= 255.5:
        return "[0, 255]"
    return None


_KIND_SPANS = {"[0, 1]": (0.0, 1.0), "[-1, 1]": (-1.0, 1.0), "[0, 255]": (0.0, 255.0)}


FAR_OUTSIDE = 10.0
"""How many widths of a set's range another set's values must go beyond it to be on another
range: 0-65535 or 1e10 beside [0, 1] data are; a noisy decoder's -3..4 or a set shrunk to half
the scale (the variance loss being measured) are not."""


def _far_outside(base: CheckedStream, other: CheckedStream) -> bool:
    """Whether `other`'s values leave `base`'s range (its conventional one, else the observed
    one) by more than FAR_OUTSIDE times its width on either side."""
    kind = _range_kind(base.low, base.high)
    low, high = _KIND_SPANS[kind] if kind else (base.low, base.high)
    margin = FAR_OUTSIDE * (high - low)
    return margin > 0 and (other.low < low - margin or other.high > high + margin)


def _check_ranges(real: CheckedStream, other: CheckedStream) -> None:
    """Refuse a set whose values are visibly on another range than the real set's (two
    conventional ranges that differ, or values far outside the other's range), unless its
    range was declared: the float counterpart of the integers' rule in `to_images`."""
    if other.value_range is not None:
        return
    kind_real, kind_other = _range_kind(real.low, real.high), _range_kind(other.low, other.high)
    apart = bool(kind_real and kind_other and kind_real != kind_other)
    if not (apart or _far_outside(real, other) or _far_outside(other, real)):
        return
    name = other.stream.name
    described = f" (a {kind_other} range)" if kind_other else ""
    real_described = f" (a {kind_real} range)" if kind_real else ""
    # the set to declare: the one off the conventional ranges (else the compared set)
    odd, kind = ("real", kind_real) if kind_other and not kind_real else (name, kind_other)
    declared = kind[1:-1].replace(" ", "") if kind else "LOW,HIGH"
    raise InputError(
        f"{name} values lie in [{other.low:.3g}, {other.high:.3g}]{described} but real values "
        f"in [{real.low:.3g}, {real.high:.3g}]{real_described}; rescale one of them or declare "
        f"its range, e.g. --range {odd}={declared} "
        f"(value_range={{'{odd}': ({declared.replace(',', ', ')})}} in Python)."
    )


def normalise_ranges(value_range: Any) -> dict[str, ValueRange | None]:
    """Per-set (low, high) pairs from one pair, a dict of pairs, or None; checked."""
    if value_range is None:
        return dict.fromkeys(SET_NAMES)
    if isinstance(value_range, dict):
        unknown = set(value_range) - set(SET_NAMES)
        if unknown:
            raise InputError(
                f"value_range names unknown sets {sorted(unknown)}; expected {list(SET_NAMES)}."
            )
        ranges = {name: value_range.get(name) for name in SET_NAMES}
    else:
        ranges = dict.fromkeys(SET_NAMES, value_range)
    for name, pair in ranges.items():
        if pair is not None:
            ranges[name] = check_value_range(pair, name)
    return ranges


def _require_samples(checked: CheckedStream) -> None:
    name = checked.stream.name
    if checked.count == 0:
        raise InputError(f"{name} is empty; expected at least 2 samples.")
    if checked.count < 2:
        raise InputError(f"{name} has 1 sample; a variance needs at least 2.")


def measure(
    real: Source,
    reconstructed: Source | None = None,
    generated: Source | None = None,
    *,
    batch_size: int = 1024,
    value_range: ValueRange | dict[str, ValueRange] | None = None,
    settings: dict[str, Any] | None = None,
    spectrum: bool | int = False,
    pca: int | None = None,
    pca_limit: int = DEFAULT_PCA_LIMIT,
    on_pair: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
) -> VarianceReport:
    """Variances of real, reconstructed and generated sets, variance losses, MSE decomposition.

    `reconstructed` must be paired with `real` sample by sample: same count, same order
    (reconstruction i is the model's output for real sample i); `generated` may have any size of
    at least 2. Each set's variance is the mean over features of the per-feature population
    variance across samples, `np.mean(np.var(x, axis=0))`, accumulated in float64.
    `value_range` maps a set (or all sets) from (low, high) linearly to [0, 1] before measuring,
    e.g. `{"generated": (-1, 1)}`. `spectrum` (True for 8 bands, or a number of bands) adds
    `report.spectrum`, the split by radial spatial frequency (`varloss.variance.spectrum`);
    `pca=K` adds `report.pca`, the split along the top K principal directions of the real set
    (`varloss.variance.pca`; at most `pca_limit` features per sample).
    `on_pair(real, reconstructed)` sees each pair of batches as they are measured (checked, on
    [0, 1] by the declared ranges, shaped like one sample each: e.g. N x C x H x W), for what
    else is computed from the pairs (PSNR, SSIM, rFID: `varloss.quality.ReconstructionQuality`).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}.")
    ranges = normalise_ranges(value_range)
    breakdowns = Breakdowns(spectrum, pca, pca_limit)
    sources = {"real": real, "reconstructed": reconstructed, "generated": generated}
    checked = {
        name: CheckedStream(open_source(source, name, batch_size=batch_size), ranges[name])
        for name, source in sources.items()
        if source is not None
    }
    real_set, recon, gen = checked["real"], checked.get("reconstructed"), checked.get("generated")
    paired = None if recon is None else _paired_moments(real_set, recon, breakdowns, on_pair)
    real_moments = MomentAccumulator() if paired is None else paired.real
    if paired is None:
        for batch in real_set:
            real_moments.update(batch)
            breakdowns.real(batch, real_set.dims)
    _require_samples(real_set)
    if recon is not None:
        _require_samples(recon)
        _check_ranges(real_set, recon)
    generated_moments = None if gen is None else _generated_moments(real_set, gen, breakdowns)

    report = report_from_moments(list(real_set.dims), real_moments, paired, generated_moments)
    _require_finite(report, checked)
    breakdowns.attach(report)
    report.settings = {
        "inputs": {name: c.stream.description for name, c in checked.items()},
        "dtypes": {name: c.dtype for name, c in checked.items()},
        "observed_ranges": {name: [c.low, c.high] for name, c in checked.items()},
        "value_range": {
            name: list(r) for name, r in ranges.items() if r is not None and name in checked
        },
        "batch_size": batch_size,
        "variance": "mean over features of the population variance (ddof=0) across samples, "
        "float64",
        "varloss_version": __version__,
        **(settings or {}),
    }
    return report


def _require_finite(report: VarianceReport, checked: dict[str, CheckedStream]) -> None:
    """Refuse numbers that cannot be right (float64 overflow), naming the set with the largest
    values: no infinite variance or NaN loss ever leaves `measure`."""
    bad = report.non_finite()
    if not bad:
        return
    name, largest = max(
        ((name, max(abs(c.low), abs(c.high))) for name, c in checked.items()),
        key=lambda item: item[1],
    )
    raise InputError(
        f"{name} values reach {largest:.3g}, so {', '.join(bad)} overflow float64 (squares of "
        f"values beyond about 1e154 are infinite); rescale {name}, e.g. declare its range with "
        f"--range {name}=LOW,HIGH (value_range in Python)."
    )


def _check_pairing(n_real: int, n_recon: int) -> None:
    if n_recon != n_real:
        raise InputError(
            f"reconstructed has {n_recon} samples but real has {n_real}; "
            "reconstructions must be paired with real samples one to one, in the same order."
        )


def _paired_moments(
    real: CheckedStream,
    recon: CheckedStream,
    breakdowns: Breakdowns,
    on_pair: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
) -> PairedMomentAccumulator:
    """Moments of real and reconstructed sets, streamed side by side; counts and shapes checked."""
    if None not in (recon.stream.count, real.stream.count):
        _check_pairing(real.stream.count, recon.stream.count)
    paired = PairedMomentAccumulator()
    for x, y in _aligned(iter(real), iter(recon)):
        if recon.dims != real.dims:
            break  # reported below, once both shapes are known
        paired.update(x, y)
        breakdowns.paired(x, y, real.dims)
        if on_pair is not None:
            on_pair(x.reshape(x.shape[0], *real.dims), y.reshape(y.shape[0], *real.dims))
    if None not in (recon.dims, real.dims) and recon.dims != real.dims:
        raise InputError(
            f"reconstructed samples are {shape_text(recon.dims)} but real samples are "
            f"{shape_text(real.dims)}; they must have the same shape."
        )
    _check_pairing(real.count, recon.count)
    return paired


def _generated_moments(
    real: CheckedStream, gen: CheckedStream, breakdowns: Breakdowns
) -> MomentAccumulator:
    """Moments of the generated set, whose samples must have the real samples' size."""
    moments = MomentAccumulator()
    size = 1
    for d in real.dims:
        size *= d
    for batch in gen:
        if batch.shape[1] != size:
            raise InputError(
                f"generated samples have {batch.shape[1]} values but real samples have "
                f"{size} ({shape_text(real.dims)}); they must have the same size."
            )
        moments.update(batch)
        breakdowns.generated(batch, real.dims)
    _require_samples(gen)
    _check_ranges(real, gen)
    return moments
