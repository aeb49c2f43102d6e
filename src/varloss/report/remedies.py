"""The correct page's sentences on what the total gap cannot say: which method leads by the
headline, where in the spectrum each remedy put the variance back, and its price in MSE.

Read from report.json rows (`band_gap_closed`, `spectral_error`, `pixel_frechet`,
`reconstruction_mse_before` / `_after`); every sentence says what its numbers are even where they
have an unexpected sign or size (a band overshooting or made worse, an MSE that drops or is 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from varloss.report.html import fmt, number

_HEADLINES = {"fid": "FID", "pixel_frechet": "pixel Fréchet distance"}


def headline_sentence(methods: Mapping[str, Mapping[str, Any]], headline: Any) -> list[str]:
    """The first row by the headline (rows arrive sorted, lower first), against the prior."""
    if headline not in _HEADLINES or not methods:
        return []
    key = "fid_after" if headline == "fid" else "pixel_frechet"
    name, row = next(iter(methods.items()))
    value = number(row.get(key))
    if value is None:
        return []
    text = f"Sorted by {_HEADLINES[headline]} (lower is better), {name} comes first ({fmt(value)}"
    prior = number((methods.get("prior") or {}).get(key))
    if name == "prior":
        text += "): no remedy improves on the plain prior sampler"
    elif prior is not None:
        text += f" against the prior's {fmt(prior)})"
    else:
        text += ")"
    return [text + "."]


def _bands_phrase(closed: Sequence[Any], edges: Sequence[Mapping[str, Any]]) -> str | None:
    """Which bands overshoot (> 1) or move away from the real variance (< 0), or None."""
    values = [(number(value), band) for value, band in zip(closed, edges, strict=False)]
    over = [(value, band) for value, band in values if value is not None and value > 1]
    away = [(value, band) for value, band in values if value is not None and value < 0]
    parts = []
    if over:
        worst, band = max(over, key=lambda item: item[0])
        parts.append(
            f"gives back more than the gap in {len(over)} of {len(values)} frequency bands "
            f"(up to {worst:.2f} times it, at {band['lo']:.2f}-{band['hi']:.2f} cycles/pixel)"
        )
    if away:
        worst, band = min(away, key=lambda item: item[0])
        parts.append(
            f"moves further from the real variance than the prior in {len(away)} of "
            f"{len(values)} bands (down to {worst:.2f} of the gap, at "
            f"{band['lo']:.2f}-{band['hi']:.2f} cycles/pixel)"
        )
    return " and ".join(parts) if parts else None


def band_sentences(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per remedy whose bands overshoot or move away: where, and its spectral error."""
    sentences = []
    for name, row in methods.items():
        closed, spectrum = row.get("band_gap_closed"), row.get("spectrum") or {}
        if name == "prior" or not closed or not spectrum.get("bands"):
            continue
        phrase = _bands_phrase(closed, spectrum["bands"])
        if phrase is None:
            continue
        error = number(row.get("spectral_error"))
        tail = f"; its spectral error is {fmt(error)}" if error is not None else ""
        sentences.append(f"{name} {phrase}{tail}.")
    return sentences


def price_sentence(name: str, before: float, after: float) -> str:
    """What a map did to the test reconstructions' MSE, against Blau & Michaeli's 2x bound."""
    if before == 0:
        return (
            f"{name}: the reconstructions have no error to begin with (MSE 0); after its map "
            f"the MSE is {fmt(after)}."
        )
    ratio = after / before
    if after < before:
        return (
            f"{name} lowers the reconstructions' MSE from {fmt(before)} to {fmt(after)} "
            f"({ratio:.2f} times): its map moves them toward the test images."
        )
    bound = "within" if ratio <= 2 else "beyond"
    return (
        f"{name} raises the reconstructions' MSE from {fmt(before)} to {fmt(after)} "
        f"({ratio:.2f} times, {bound} the 2x bound at perfect perception of Blau & Michaeli)."
    )


def price_sentences(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The price of each remedy that acts on decoded images (rows with an MSE after)."""
    sentences = []
    for name, row in methods.items():
        before = number(row.get("reconstruction_mse_before"))
        after = number(row.get("reconstruction_mse_after"))
        if before is not None and after is not None:
            sentences.append(price_sentence(name, before, after))
    return sentences


def honest_sentences(report: Mapping[str, Any]) -> list[str]:
    """All of the above for one correct report.json."""
    methods = report.get("methods") or {}
    headline = (report.get("settings") or {}).get("headline")
    return headline_sentence(methods, headline) + band_sentences(methods) + price_sentences(methods)
