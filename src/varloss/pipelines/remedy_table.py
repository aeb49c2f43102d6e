"""How `varloss correct` compares its methods: gaps against the baseline, the headline order,
and the short table the CLI prints (library arithmetic on the rows, nothing written here)."""

from __future__ import annotations

import math
from typing import Any

from varloss.records import fid_number
from varloss.records.values import number
from varloss.samplers import BASELINE
from varloss.variance.gap import band_gap_closed, gap_closed, spectral_error

HEADLINE_DEFINITION = (
    "rows sorted by FID (lower first) where it was computed for every method, else by "
    "pixel_frechet; the total gap closed is not the headline"
)


def compare_with_baseline(rows: dict[str, dict[str, Any]]) -> None:
    """Add to every row the gap it closes (in total and per frequency band), its spectral
    error and its FID gain over the prior (the baseline)."""
    baseline = rows[BASELINE]
    before = fid_number(baseline["fid"])
    for row in rows.values():
        row["gap_closed"] = gap_closed(
            row["var_real"], baseline["var_generated"], row["var_generated"]
        )
        row["band_gap_closed"] = band_gap_closed(row.get("spectrum"), baseline.get("spectrum"))
        row["spectral_error"] = spectral_error(row.get("spectrum"))
        after = fid_number(row["fid"])
        row["fid_before"], row["fid_after"] = before, after
        row["fid_gain"] = None if before is None or after is None else before - after


def sort_by_headline(rows: dict[str, dict[str, Any]]) -> str:
    """Reorder `rows` by the headline, lower first (a row without a value last, in the order
    given), and return its name: "fid" where every row has one, else "pixel_frechet". A NaN is
    no value (`varloss.records.fid_number`), so a failed FID makes pixel_frechet the headline."""
    headline = "fid" if all(fid_number(row["fid"]) is not None for row in rows.values()) else None
    headline = headline or "pixel_frechet"

    def key(item: tuple[int, tuple[str, dict[str, Any]]]) -> tuple[float, int]:
        index, (_, row) = item
        if headline == "fid":
            value = fid_number(row["fid"])
        else:  # NaN sorts nowhere: it is "no value", as a NaN FID is
            value = number(row.get("pixel_frechet"), f"{row.get('method')}'s pixel_frechet")
        return (math.inf if value is None else value, index)

    ordered = [entry for _, entry in sorted(enumerate(rows.items()), key=key)]
    rows.clear()
    rows.update(ordered)
    return headline


def method_table(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One short row per method: the numbers `varloss correct` prints."""
    return [
        {
            "method": name,
            "var_real": row["var_real"],
            "var_generated": row["var_generated"],
            "variance_loss_generated": row.get("variance_loss_generated"),
            "gap_closed": row.get("gap_closed"),
            "band_gap_closed": row.get("band_gap_closed"),
            "spectral_error": row.get("spectral_error"),
            "pixel_frechet": row.get("pixel_frechet"),
            "reconstruction_mse_before": row.get("reconstruction_mse_before"),
            "reconstruction_mse_after": row.get("reconstruction_mse_after"),
            "variance_regained": row.get("variance_regained"),
            "fid": row.get("fid_after"),
            "fid_gain": row.get("fid_gain"),
        }
        for name, row in rows.items()
    ]
