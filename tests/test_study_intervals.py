"""Seeds and intervals of the study: seed lists expand into runs, the fit's bootstrap intervals
cover the true slope at about the nominal rate, the per-family table against numpy, the
reconstruction column of results.csv, and the figure's error bars and protocol markers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from varloss.errors import InputError
from varloss.pipelines.study import (
    RESULT_COLUMNS,
    bootstrap_line,
    collect_row,
    family_ratios,
    fit_results,
    parse_spec,
    write_results,
)
from varloss.runs import CONFIG_FILE, REPORT_FILE, RunFolder

# ---------------------------------------------------------------------------------------------
# seeds


def test_seed_lists_expand_into_runs_that_share_a_point() -> None:
    spec = parse_spec(
        "name: seeds\n"
        "defaults: {family: dense, dataset: digits, epochs: 1, seed: [0, 1, 2]}\n"
        "grid: {latent: [2, 3]}\n"
        "runs: [{family: dense, dataset: digits, latent: 4, epochs: 1, seed: [7, 8]}]\n"
    )
    assert [(r.latent, r.seed) for r in spec.runs] == [
        (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2), (4, 7), (4, 8),
    ]  # fmt: skip
    assert len({r.run_id for r in spec.runs}) == 8
    points = [r.point_id for r in spec.runs]
    assert len(set(points)) == 3 and points[0] == points[2] != points[3]
    # a grid crosses a seed list like any other list
    crossed = parse_spec(
        "grid: {family: dense, dataset: digits, epochs: 1, latent: 2, seed: [0, 5]}"
    )
    assert [r.seed for r in crossed.runs] == [0, 5]


@pytest.mark.parametrize(
    ("seed", "words"), [("[]", "empty list"), ("[0, -1]", "non-negative integer")]
)
def test_bad_seed_lists_name_the_field(seed: str, words: str) -> None:
    text = f"runs: [{{family: dense, dataset: digits, latent: 2, epochs: 1, seed: {seed}}}]"
    with pytest.raises(InputError, match=words):
        parse_spec(text)


# ---------------------------------------------------------------------------------------------
# the fit's bootstrap


def test_bootstrap_matches_a_loop_of_polyfits_on_the_same_draws() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0.01, 0.05, 12)
    y = 0.9 * x + 0.002 + 0.001 * rng.standard_normal(12)
    result = bootstrap_line(x, y, resamples=300, seed=11)
    index = np.random.default_rng(11).integers(0, 12, size=(300, 12))
    fits = np.array([np.polyfit(x[i], y[i], 1) for i in index])  # no constant draw here
    assert result["bootstrap_resamples_used"] == 300
    assert result["slope_ci95"] == pytest.approx(np.percentile(fits[:, 0], [2.5, 97.5]), rel=1e-9)
    assert result["intercept_ci95"] == pytest.approx(
        np.percentile(fits[:, 1], [2.5, 97.5]), rel=1e-9, abs=1e-15
    )
    origin = bootstrap_line(x, y, through_origin=True, resamples=300, seed=11)
    slopes = [x[i] @ y[i] / (x[i] @ x[i]) for i in index]
    assert origin["slope_ci95"] == pytest.approx(np.percentile(slopes, [2.5, 97.5]), rel=1e-9)
    assert origin["intercept_ci95"] is None
    assert bootstrap_line(x[:2], y[:2])["slope_ci95"] is None  # too few runs to resample
    with pytest.raises(InputError, match="resamples"):
        bootstrap_line(x, y, resamples=0)


def test_bootstrap_interval_covers_the_true_slope_at_about_the_nominal_rate() -> None:
    """200 synthetic studies of 30 runs with known slope and intercept: the 95% intervals
    must cover them in 88% to 99% of the studies (a too narrow or too wide interval fails)."""
    rng = np.random.default_rng(2024)
    slope, intercept, n, studies = 1.1, 0.003, 30, 200
    covered = np.zeros((studies, 2), dtype=bool)
    for study in range(studies):
        x = rng.uniform(0.005, 0.06, n)
        y = slope * x + intercept + 0.002 * rng.standard_normal(n)
        result = bootstrap_line(x, y, resamples=500, seed=study)
        covered[study] = [
            result["slope_ci95"][0] <= slope <= result["slope_ci95"][1],
            result["intercept_ci95"][0] <= intercept <= result["intercept_ci95"][1],
        ]
    assert 0.88 <= covered[:, 0].mean() <= 0.99
    assert 0.88 <= covered[:, 1].mean() <= 0.99


def _rows() -> list[dict]:
    """Results rows: two families, three seeds per point, both protocols for dense."""
    rng = np.random.default_rng(5)
    rows = []
    for family, protocol, latent in [
        ("dense", "mean", 2), ("dense", "mean", 8), ("dense", "sample", 2), ("conv", "mean", 4),
    ]:  # fmt: skip
        for seed in range(3):
            mse = 0.02 / latent + 0.001 * rng.random()
            rows.append(
                {
                    "run_id": f"{family}-z{latent}-{protocol}-s{seed}",
                    "point_id": f"{family}-z{latent}-{protocol}",
                    "family": family,
                    "dataset": "digits",
                    "latent": latent,
                    "reconstruction": protocol,
                    "seed": seed,
                    "mse": mse,
                    "variance_loss_reconstructed": mse * (1.2 + 0.05 * rng.standard_normal()),
                    "variance_loss_generated": 1.3 * mse,
                }
            )
    return rows


def test_fit_results_record_the_intervals_and_the_bootstrap() -> None:
    rows = _rows()
    fit = fit_results(rows)
    x = np.array([r["mse"] for r in rows])
    y = np.array([r["variance_loss_reconstructed"] for r in rows])
    for key in ("reconstructed", "generated", "origin", "generated_origin"):
        assert len(fit[key]["slope_ci95"]) == 2 and "slope" in fit[key] and "r2" in fit[key]
    low, high = fit["reconstructed"]["slope_ci95"]
    assert low < fit["reconstructed"]["slope"] < high
    assert fit["reconstructed"]["slope_ci95"] == bootstrap_line(x, y)["slope_ci95"]
    assert fit["bootstrap"] == {
        "method": "percentile", "unit": "run", "resamples": 2000, "seed": 0, "level": 0.95,
    }  # fmt: skip
    assert fit["n_runs"] == 12 and fit["n_points"] == 4
    assert fit["reconstruction"] == ["mean", "sample"]
    assert fit == json.loads(json.dumps(fit))  # JSON-safe, and the same on every call:
    assert fit_results(rows) == fit


# ---------------------------------------------------------------------------------------------
# the per-family table


def test_family_ratios_match_numpy_and_the_t_interval() -> None:
    rows = _rows()
    rows.append({**rows[0], "run_id": "broken", "mse": ""})  # unreadable: left out
    table = family_ratios(rows)
    assert [(r["family"], r["reconstruction"]) for r in table] == [
        ("conv", "mean"), ("dense", "mean"), ("dense", "sample"),
    ]  # fmt: skip
    dense = [r for r in rows[:6]]
    ratios = np.array([r["variance_loss_reconstructed"] / r["mse"] for r in dense])
    row = table[1]
    assert (row["n"], row["points"]) == (6, 2)
    assert row["mean_ratio"] == pytest.approx(ratios.mean(), rel=1e-12)
    assert row["std_ratio"] == pytest.approx(ratios.std(ddof=1), rel=1e-12)
    half = stats.t.ppf(0.975, 5) * ratios.std(ddof=1) / math.sqrt(6)
    assert row["ratio_ci95"] == pytest.approx([ratios.mean() - half, ratios.mean() + half])
    single = family_ratios(rows[:1])[0]
    assert single["n"] == 1 and single["std_ratio"] is None and single["ratio_ci95"] is None


# ---------------------------------------------------------------------------------------------
# results.csv: the reconstruction column


def test_results_csv_records_each_runs_reconstruction_protocol(tmp_path: Path) -> None:
    spec = parse_spec(
        "runs: [{family: dense, dataset: digits, latent: 2, epochs: 1, seed: [0, 1, 2]}]"
    )
    report = {"mse": 0.02, "variance_loss_reconstructed": 0.019}
    folders = [RunFolder(tmp_path / run.run_id).create() for run in spec.runs]
    folders[0].write_json(REPORT_FILE, {**report, "settings": {"reconstruction": "sample"}})
    folders[1].write_json(REPORT_FILE, report)  # recorded in config.json only
    folders[1].write_json(CONFIG_FILE, {"train": {"reconstruction": "sample"}})
    folders[2].write_json(REPORT_FILE, report)  # a run from before the protocol was recorded
    rows = [collect_row(run, f.path) for run, f in zip(spec.runs, folders, strict=True)]
    path = write_results(rows, tmp_path / "results.csv")
    with path.open() as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == RESULT_COLUMNS
    assert [r["reconstruction"] for r in read] == ["sample", "sample", "mean"]
    assert len({r["point_id"] for r in read}) == 1 and read[0]["point_id"] == spec.runs[0].point_id
