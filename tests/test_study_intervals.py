"""Seeds and intervals of the study: seed lists expand into runs, the fit's bootstrap intervals
cover the true slope at about the nominal rate, the per-family table against numpy, the
reconstruction column of results.csv, and the figure's error bars and protocol markers."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from varloss.errors import InputError
from varloss.figures import family_style, plot_study
from varloss.figures import study as study_figure
from varloss.pipelines.study import (
    RESULT_COLUMNS,
    collect_row,
    fit_results,
    parse_spec,
    write_results,
)
from varloss.records import FitRecord, ResultsRow
from varloss.report import fmt, render_report
from varloss.report.pages import study as study_page
from varloss.runs import CONFIG_FILE, FIGURE_FILE, FIT_FILE, REPORT_FILE, RESULTS_FILE, RunFolder
from varloss.variance.fit import bootstrap_line
from varloss.variance.protocol import Reconstruction
from varloss.variance.ratios import RATIO_INTERVAL, family_ratios

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
    assert result.resamples_used == 300
    assert result.slope_ci95 == pytest.approx(np.percentile(fits[:, 0], [2.5, 97.5]), rel=1e-9)
    assert result.intercept_ci95 == pytest.approx(
        np.percentile(fits[:, 1], [2.5, 97.5]), rel=1e-9, abs=1e-15
    )
    origin = bootstrap_line(x, y, through_origin=True, resamples=300, seed=11)
    slopes = [x[i] @ y[i] / (x[i] @ x[i]) for i in index]
    assert origin.slope_ci95 == pytest.approx(np.percentile(slopes, [2.5, 97.5]), rel=1e-9)
    assert origin.intercept_ci95 is None
    assert bootstrap_line(x[:2], y[:2]).slope_ci95 is None  # too few runs to resample
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
            result.slope_ci95[0] <= slope <= result.slope_ci95[1],
            result.intercept_ci95[0] <= intercept <= result.intercept_ci95[1],
        ]
    assert 0.88 <= covered[:, 0].mean() <= 0.99
    assert 0.88 <= covered[:, 1].mean() <= 0.99


def _rows() -> list[ResultsRow]:
    """Results rows: two families, three seeds per point, both protocols for dense."""
    rng = np.random.default_rng(5)
    rows = []
    for family, protocol, latent in [
        ("dense", "mean", 2), ("dense", "mean", 8), ("dense", "sample", 2), ("conv", "mean", 4),
    ]:  # fmt: skip
        for seed in range(3):
            mse = 0.02 / latent + 0.001 * rng.random()
            rows.append(
                ResultsRow(
                    run_id=f"{family}-z{latent}-{protocol}-s{seed}",
                    point_id=f"{family}-z{latent}-{protocol}",
                    family=family,
                    dataset="digits",
                    latent=latent,
                    epochs=5,
                    loss="bernoulli",
                    reconstruction=Reconstruction(protocol),
                    seed=seed,
                    mse=mse,
                    variance_loss_reconstructed=mse * (1.2 + 0.05 * rng.standard_normal()),
                    variance_loss_generated=1.3 * mse,
                )
            )
    return rows


def test_fit_results_record_the_intervals_and_the_bootstrap() -> None:
    rows = _rows()
    fit = fit_results(rows)
    x = np.array([r.mse for r in rows])
    y = np.array([r.variance_loss_reconstructed for r in rows])
    for key in ("reconstructed", "generated", "origin", "generated_origin"):
        line = fit.line(key)
        assert len(line.slope_ci95) == 2 and line.slope is not None and line.r2 is not None
        assert line.bootstrap_resamples_used == 2000
    low, high = fit.reconstructed.slope_ci95
    assert low < fit.reconstructed.slope < high
    assert fit.reconstructed.slope_ci95 == bootstrap_line(x, y).slope_ci95
    assert fit.bootstrap == {
        "method": "percentile", "unit": "run", "resamples": 2000, "seed": 0, "level": 0.95,
    }  # fmt: skip
    assert fit.n_runs == 12 and fit.n_points == 4
    assert fit.reconstruction == ("mean", "sample")
    as_json = fit.to_json()
    assert as_json == json.loads(json.dumps(as_json))  # JSON-safe, and the same on every call:
    assert fit_results(rows) == fit


# ---------------------------------------------------------------------------------------------
# the per-family table


def test_family_ratios_match_numpy_and_the_t_interval() -> None:
    rows = _rows()
    rows.append(dataclasses.replace(rows[0], run_id="broken", mse=None))  # not recorded: left out
    table = family_ratios(rows)
    assert [(r.family, r.reconstruction) for r in table] == [
        ("conv", "mean"), ("dense", "mean"), ("dense", "sample"),
    ]  # fmt: skip
    dense = [r for r in rows[:6]]
    ratios = np.array([r.variance_loss_reconstructed / r.mse for r in dense])
    row = table[1]
    assert (row.n, row.points) == (6, 2)
    assert row.mean_ratio == pytest.approx(ratios.mean(), rel=1e-12)
    assert row.std_ratio == pytest.approx(ratios.std(ddof=1), rel=1e-12)
    half = stats.t.ppf(0.975, 5) * ratios.std(ddof=1) / math.sqrt(6)
    assert row.ratio_ci95 == pytest.approx((ratios.mean() - half, ratios.mean() + half))
    single = family_ratios(rows[:1])[0]
    assert single.n == 1 and single.std_ratio is None and single.ratio_ci95 is None


# ---------------------------------------------------------------------------------------------
# results.csv: the reconstruction column


def test_results_csv_records_each_runs_reconstruction_protocol(tmp_path: Path) -> None:
    spec = parse_spec(
        "runs: [{family: dense, dataset: digits, latent: 2, epochs: 1, seed: [0, 1, 2]}]"
    )
    report = {"mse": 0.02, "variance_loss_reconstructed": 0.019}
    folders = [RunFolder(tmp_path / run.run_id).create() for run in spec.runs]
    evaluation = {"evaluation": {"reconstruction": "sample"}}  # where train's report says it
    folders[0].write_json(REPORT_FILE, {**report, "settings": evaluation})
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


# ---------------------------------------------------------------------------------------------
# the figure and the study page


def _mixed_study(folder: Path, rows: list[ResultsRow]) -> FitRecord:
    """A study folder as `run_study` finishes one: results.csv, fit.json and the figure."""
    study = RunFolder(folder).create()
    write_results(rows, study.file(RESULTS_FILE))
    fit = fit_results(rows)
    study.write_json(FIT_FILE, fit.to_json())
    plot_study(rows, fit, study.file(FIGURE_FILE), title="mixed")
    return fit


# The markers of the families in `_rows` (dense, conv: each family has its own).
_POINT_MARKERS = {family_style("dense").marker, family_style("conv").marker}


def test_figure_error_bars_across_seeds_and_half_filled_sample_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures: list = []
    save = study_figure._save_png_and_svg
    monkeypatch.setattr(
        study_figure,
        "_save_png_and_svg",
        lambda plt, fig, path: (figures.append(fig), save(plt, fig, path)),
    )
    rows = _rows()
    _mixed_study(tmp_path / "study", rows)
    scatter = figures[0].axes[0]
    filled = [
        line
        for line in scatter.lines
        if line.get_marker() in _POINT_MARKERS and line.get_fillstyle() != "none"
    ]
    # one marker per point (4 points of 3 seeds), reconstructions: 3 full, 1 half-filled
    assert sorted(line.get_fillstyle() for line in filled) == ["full", "full", "full", "left"]
    sample = next(line for line in filled if line.get_fillstyle() == "left")
    group = [r for r in rows if r.reconstruction == "sample"]
    xs = np.array([r.mse for r in group])
    ys = np.array([r.variance_loss_reconstructed for r in group])
    assert sample.get_xdata()[0] == pytest.approx(xs.mean(), rel=1e-12)
    assert sample.get_ydata()[0] == pytest.approx(ys.mean(), rel=1e-12)
    # the error bars: vertical segments of length 2 std (ddof=1) around the mean
    heights = [
        segment[1, 1] - segment[0, 1]
        for collection in scatter.collections
        for segment in collection.get_segments()
        if segment[0, 0] == segment[1, 0]
    ]
    assert len(heights) == 8  # 4 points x (reconstructions, generated samples)
    assert min(abs(h - 2 * ys.std(ddof=1)) for h in heights) < 1e-12
    legend = [text.get_text() for text in scatter.get_legend().get_texts()]
    assert "filled: reconstructions, mean protocol" in legend
    assert "half-filled: reconstructions, sample protocol" in legend
    assert "error bars: ± 1 std across seeds" in legend
    # the decomposition panel tells apart runs that differ only in their protocol
    ticks = [tick.get_text() for tick in figures[0].axes[1].get_yticklabels()]
    assert ticks[0] == "dense digits z2 e5 s0 mean" and ticks[6] == "dense digits z2 e5 s0 sample"

    figures.clear()  # one protocol, one seed per point: no half-filled marker, no error bars
    single = [r for r in rows if r.reconstruction == "mean" and r.seed == 0]
    _mixed_study(tmp_path / "single", single)
    scatter = figures[0].axes[0]
    fills = {line.get_fillstyle() for line in scatter.lines if line.get_marker() in _POINT_MARKERS}
    assert fills == {"full", "none"}
    assert not scatter.collections
    legend = [text.get_text() for text in scatter.get_legend().get_texts()]
    assert "filled: reconstructions (mean protocol)" in legend
    ticks = [tick.get_text() for tick in figures[0].axes[1].get_yticklabels()]
    assert ticks[0] == "dense digits z2 e5 s0"  # one protocol: not repeated on every run


def test_study_page_family_table_fit_intervals_and_protocols(tmp_path: Path) -> None:
    rows = _rows()
    folder = tmp_path / "study"
    fit = _mixed_study(folder, rows)
    context = study_page.build(folder, None)
    table = context["study"]["family_table"]
    assert table.columns[:6] == ["family", "reconstruction", "runs", "points", "mean ratio", "std"]
    by_key = {(row[0].text, row[1].text): row for row in table.rows}
    sample = [r for r in rows if r.reconstruction == "sample"]
    ratios = np.array([r.variance_loss_reconstructed / r.mse for r in sample])
    row = by_key[("dense", "sample")]
    assert (row[2].value, row[3].value) == (3, 1)
    assert row[4].value == pytest.approx(ratios.mean(), rel=1e-12)
    assert row[5].value == pytest.approx(ratios.std(ddof=1), rel=1e-12)
    half = stats.t.ppf(0.975, 2) * ratios.std(ddof=1) / math.sqrt(3)
    assert row[6].value == pytest.approx(ratios.mean() - half, rel=1e-12)
    assert row[6].text == f"{fmt(ratios.mean() - half)} – {fmt(ratios.mean() + half)}"
    fit_rows = {row[0].text: row for row in context["study"]["fit_table"].rows}
    low, high = fit.reconstructed.slope_ci95
    assert fit_rows["reconstructed"][5].text == f"{fmt(low)} – {fmt(high)}"
    assert fit_rows["origin"][6].text == "–"  # the origin fit has no intercept to bound
    html = render_report(folder)
    assert "The study mixes reconstruction protocols: 9 with the `mean` protocol" in html
    assert "3 with the `sample` protocol" in html
    assert f"slope&#39;s 95% interval is {fmt(low, 3)} to {fmt(high, 3)}" in html
    assert "Ratio variance loss / MSE by family" in html and RATIO_INTERVAL in html


def test_study_page_says_which_runs_early_stopping_ended(tmp_path: Path) -> None:
    rows = _rows()
    for index, row in enumerate(rows):  # conv reached its cap twice, everything else stopped
        capped = row.family == "conv" and index % 3 != 2
        rows[index] = dataclasses.replace(
            row, epochs=30, early_stopped=not capped, stopped_epoch=30 if capped else 12
        )
    _mixed_study(tmp_path / "study", rows)
    sentences = study_page.build(tmp_path / "study", None)["sentences"]
    expected = (
        "10 of 12 runs trained with early stopping stopped once their validation loss had "
        "stopped improving; 2 reached their epoch cap while still improving, so they are less "
        "than converged: conv on digits (30 epochs) ×2."
    )
    assert expected in sentences
    # runs without early stopping: the column is blank, nothing is said
    rows = [dataclasses.replace(row, early_stopped=None) for row in rows]
    _mixed_study(tmp_path / "plain", rows)
    sentences = study_page.build(tmp_path / "plain", None)["sentences"]
    assert not any("early stopping" in sentence for sentence in sentences)
