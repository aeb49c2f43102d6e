"""The typed records of a run folder (varloss.records): each round-trips, older files are migrated
in one place (results.csv without the later columns, fit.json without intervals or the per-family
table, report.json without the protocol), bad values are one sentence, and the study page reads
fit.json's table instead of recomputing it, even for a fit with negative slopes and R² below 0."""

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
from varloss.pipelines.study import fit_results
from varloss.records import (
    RESULT_COLUMNS,
    FitRecord,
    ReportRecord,
    ResultsRow,
    read_fit,
    read_report,
    read_results,
    write_results,
)
from varloss.records.values import flag, integer, number
from varloss.report import fmt, render_report
from varloss.report.pages import study as study_page
from varloss.runs import CONFIG_FILE, FIT_FILE, REPORT_FILE, RESULTS_FILE, RunFolder
from varloss.variance.fit import LineFit
from varloss.variance.protocol import Reconstruction
from varloss.variance.ratios import FamilyRatio

# results.csv as the first `varloss study` wrote it (commit 200db2d): no reconstruction,
# point_id, spectrum shares, best/stopped epoch or early_stopped column
OLD_COLUMNS = [
    "run_id", "family", "dataset", "latent", "epochs", "loss", "seed", "limit", "mse",
    "var_real", "var_reconstructed", "var_generated", "variance_loss_reconstructed",
    "variance_loss_generated", "bias2", "cov_term", "train_seconds",
]  # fmt: skip


def _row(index: int, **changes: object) -> ResultsRow:
    mse = 0.01 + 0.003 * index
    loss = 0.9 * mse + 1e-4 * (-1) ** index
    row = ResultsRow(
        run_id=f"run-{index}",
        family=("dense", "conv")[index % 2],
        dataset="digits",
        latent=2 + index % 2,
        epochs=3,
        loss="bernoulli",
        seed=index // 2,
        point_id=f"point-{index % 2}",
        mse=mse,
        var_real=0.1,
        var_reconstructed=0.1 - loss,
        var_generated=0.1 - 1.1 * mse,
        variance_loss_reconstructed=loss,
        variance_loss_generated=1.1 * mse,
        bias2=1e-5 * index,
        cov_term=loss - mse + 1e-5 * index,
        train_seconds=1.25 + index,
    )
    return dataclasses.replace(row, **changes)


def _write_old_results(folder: RunFolder, rows: list[dict[str, object]]) -> None:
    folder.write_csv(RESULTS_FILE, rows, OLD_COLUMNS)


# ---------------------------------------------------------------------------------------------
# results.csv


def test_results_rows_round_trip_every_kind_of_value(tmp_path: Path) -> None:
    rows = [
        _row(0, early_stopped=True, best_epoch=2, stopped_epoch=3, limit=100),
        _row(1, early_stopped=False, reconstruction=Reconstruction.SAMPLE, mse=1 / 3),
        _row(2, var_generated=None, high_frequency_share_reconstructed=0.125, loss=None),
    ]
    path = write_results(rows, tmp_path / RESULTS_FILE)
    assert read_results(tmp_path) == rows  # a path or a RunFolder
    with path.open() as handle:
        cells = list(csv.DictReader(handle))
    assert list(cells[0]) == RESULT_COLUMNS
    assert [c["early_stopped"] for c in cells] == ["True", "False", ""]
    assert cells[1]["mse"] == repr(1 / 3) and cells[2]["var_generated"] == ""
    assert [ResultsRow.from_csv_row(row.to_csv_row()) for row in rows] == rows
    assert _row(0, reconstruction="sample").reconstruction is Reconstruction.SAMPLE
    with pytest.raises(InputError, match="reconstruction must be one of mean, sample"):
        _row(0, reconstruction="blurred")


def test_an_old_results_csv_is_migrated(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    old = [
        {**{k: v for k, v in _row(i).to_csv_row().items() if k in OLD_COLUMNS}, "limit": ""}
        for i in range(4)
    ]
    _write_old_results(folder, old)
    rows = read_results(folder)
    assert [row.reconstruction for row in rows] == [Reconstruction.MEAN] * 4  # protocol_of
    assert {row.point_id for row in rows} == {None}
    assert all(row.early_stopped is None and row.best_epoch is None for row in rows)
    assert all(row.high_frequency_share_generated is None for row in rows)
    assert [row.mse for row in rows] == [_row(i).mse for i in range(4)]  # float64 exactly
    assert [row.latent for row in rows] == [2, 3, 2, 3] and rows[0].limit is None
    # runs that differ only in their seed are one point, others are not
    assert rows[0].point == rows[2].point != rows[1].point == rows[3].point


@pytest.mark.parametrize(
    ("spelling", "value"),
    [("True", True), ("false", False), ("TRUE", True), ("1", True), ("0", False), ("", None)],
)
def test_early_stopped_is_read_in_every_spelling_older_files_used(
    tmp_path: Path, spelling: str, value: bool | None
) -> None:
    cells = {**_row(0).to_csv_row(), "early_stopped": spelling}
    assert ResultsRow.from_csv_row(cells).early_stopped is value


@pytest.mark.parametrize(
    ("column", "cell", "words"),
    [
        ("mse", "0.1x", "column mse: expected a number, got '0.1x'"),
        ("early_stopped", "maybe", "column early_stopped: expected true or false"),
        ("latent", "2.5", "column latent: expected an integer, got '2.5'"),
        ("run_id", "", "column run_id: expected a value, found none"),
        ("reconstruction", "blurred", "reconstruction must be one of mean, sample"),
    ],
)
def test_a_bad_results_cell_is_one_sentence_naming_file_line_and_column(
    tmp_path: Path, column: str, cell: str, words: str
) -> None:
    folder = RunFolder(tmp_path)
    rows = [_row(0).to_csv_row(), {**_row(1).to_csv_row(), column: cell}]
    folder.write_csv(RESULTS_FILE, rows, RESULT_COLUMNS)
    with pytest.raises(InputError, match=f"{RESULTS_FILE} line 3") as error:
        read_results(folder)
    assert words in str(error.value)


def test_the_value_rules() -> None:
    assert number("nan", "x") is None and number("", "x") is None and number(3, "x") == 3.0
    assert number("-inf", "x") == -math.inf
    assert integer("4.0", "x") == 4 and integer(None, "x") is None
    assert flag(True, "x") is True and flag("No", "x") is False
    with pytest.raises(InputError, match="x: expected a number, got True"):
        number(True, "x")


# ---------------------------------------------------------------------------------------------
# fit.json


def test_fit_record_round_trips_through_json(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(6)]
    fit = fit_results(rows, settings={"command": "varloss study --preset quick"})
    folder = RunFolder(tmp_path)
    folder.write_json(FIT_FILE, fit.to_json())
    read = read_fit(folder)
    assert read == fit and read.migrated == ()
    assert read.settings == {"command": "varloss study --preset quick"}
    assert isinstance(read.reconstructed.slope_ci95, tuple)
    assert read.family_ratios[0] == fit.family_ratios[0]


def test_an_old_fit_json_is_migrated_with_the_results_rows(tmp_path: Path) -> None:
    """fit.json as commit 200db2d wrote it: no intervals, bootstrap, family_ratios, n_points or
    reconstruction. The per-family table comes from results.csv through the library's maths."""
    rows = [_row(i) for i in range(6)]
    old = {
        "x": "mse",
        "y": "variance_loss_reconstructed / variance_loss_generated",
        "reconstructed": {"slope": 0.9, "intercept": 1e-4, "r2": 0.99, "n": 6},
        "generated": {"slope": 1.1, "intercept": 0.0, "r2": 1.0, "n": 6},
        "origin": {"slope": 0.91, "intercept": 0.0, "r2": 0.98, "n": 6},
        "generated_origin": {"slope": 1.1, "intercept": 0.0, "r2": 1.0, "n": 6},
        "n_runs": 6,
        "families": ["conv", "dense"],
        "datasets": ["digits"],
    }
    fit = FitRecord.from_json(old, rows=rows)
    assert fit.reconstructed == LineFit(slope=0.9, intercept=1e-4, r2=0.99, n=6)
    assert fit.reconstructed.slope_ci95 is None and fit.bootstrap is None
    assert fit.n_points == 2 and fit.reconstruction == ("mean",)
    assert set(fit.migrated) == {"family_ratios", "n_points", "reconstruction"}
    dense = np.array([r.variance_loss_reconstructed / r.mse for r in rows if r.family == "dense"])
    table = {row.family: row for row in fit.family_ratios}
    assert table["dense"].n == 3 and table["dense"].points == 1
    assert table["dense"].mean_ratio == pytest.approx(dense.mean(), rel=1e-12)
    half = stats.t.ppf(0.975, 2) * dense.std(ddof=1) / math.sqrt(3)
    assert table["dense"].ratio_ci95 == pytest.approx((dense.mean() - half, dense.mean() + half))
    # without rows the table stays empty and the protocols are the older records' `mean`
    alone = FitRecord.from_json(old)
    assert (
        alone.family_ratios == () and alone.n_points is None and alone.reconstruction == ("mean",)
    )
    with pytest.raises(InputError, match="fit.json key origin.slope: expected a number"):
        FitRecord.from_json({**old, "origin": {"slope": "steep"}})


def test_an_old_study_folder_renders_with_the_migrated_family_table(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "old")
    folder.create()
    _write_old_results(folder, [_row(i).to_csv_row() for i in range(4)])
    fit = fit_results(read_results(folder)).to_json()
    for key in ("family_ratios", "n_points", "reconstruction"):
        del fit[key]
    folder.write_json(FIT_FILE, fit)
    context = study_page.build(folder.path, None)
    table = context["study"]["family_table"]
    assert [(row[0].text, row[2].value) for row in table.rows] == [("conv", 2), ("dense", 2)]
    assert "Reconstructions were measured with the `mean` protocol" in " ".join(
        context["sentences"]
    )


def test_the_study_page_reads_family_ratios_from_fit_json(tmp_path: Path) -> None:
    """A table that the rows would not give (mean ratio 7): the page shows what fit.json says."""
    rows = [_row(i) for i in range(4)]
    folder = RunFolder(tmp_path / "study")
    folder.create()
    write_results(rows, folder.file(RESULTS_FILE))
    written = FamilyRatio("dense", "mean", n=2, points=1, mean_ratio=7.0, std_ratio=None,
                          ratio_ci95=None)  # fmt: skip
    fit = dataclasses.replace(fit_results(rows), family_ratios=(written,))
    folder.write_json(FIT_FILE, fit.to_json())
    table = study_page.build(folder.path, None)["study"]["family_table"]
    assert [(row[0].text, row[4].value) for row in table.rows] == [("dense", 7.0)]


def test_a_fit_with_negative_slopes_and_r2_below_zero_parses_and_renders(tmp_path: Path) -> None:
    # variance loss falling with MSE, far from the origin: the origin fit is worse than the mean
    mse = np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    loss = 0.05 - 0.5 * mse + np.array([1e-4, -2e-4, 1e-4, 2e-4, -1e-4])
    rows = [
        _row(
            i, mse=float(m), variance_loss_reconstructed=float(v), variance_loss_generated=-float(v)
        )
        for i, (m, v) in enumerate(zip(mse, loss, strict=True))
    ]
    folder = RunFolder(tmp_path / "study")
    folder.create()
    write_results(rows, folder.file(RESULTS_FILE))
    folder.write_json(FIT_FILE, fit_results(rows).to_json())
    fit = read_fit(folder, read_results(folder))
    slope, intercept = np.polyfit(mse, loss, 1)
    assert fit.reconstructed.slope == pytest.approx(slope, rel=1e-10) and slope < 0
    assert fit.generated.slope == pytest.approx(-slope, rel=1e-10)
    through = float(mse @ loss / (mse @ mse))
    origin_r2 = 1 - np.sum((loss - through * mse) ** 2) / np.sum((loss - loss.mean()) ** 2)
    assert fit.origin.r2 == pytest.approx(origin_r2, rel=1e-10) and origin_r2 < 0
    assert fit.generated_origin.slope < 0
    context = study_page.build(folder.path, None)
    fit_rows = {row[0].text: row for row in context["study"]["fit_table"].rows}
    assert fit_rows["origin"][3].value == pytest.approx(origin_r2, rel=1e-10)
    assert fit_rows["generated"][1].value == pytest.approx(-slope, rel=1e-10)
    expected = f"variance loss ≈ {fmt(slope, 3)} × MSE + {fmt(intercept, 3)}"
    assert any(expected in sentence for sentence in context["sentences"])
    html = render_report(folder.path)
    # the page's verdict follows the slope's sign: a negative slope is called negative
    assert fmt(origin_r2) in html and "The slope is negative: across these runs" in html


# ---------------------------------------------------------------------------------------------
# report.json


def test_report_record_reads_a_new_report_and_migrates_an_old_one(tmp_path: Path) -> None:
    new = RunFolder(tmp_path / "new").create()
    report = {
        **{key: 0.01 * (i + 1) for i, key in enumerate(("mse", "var_real", "bias2"))},
        "train_seconds": 4.5,
        "best_epoch": 2,
        "stopped_epoch": 3,
        "early_stopped": True,
        "spectrum": {"high_frequency_share": {"reconstructed": 0.25, "generated": 0.5}},
        "settings": {"evaluation": {"reconstruction": "sample"}, "train": {"seed": 4}},
    }
    new.write_json(REPORT_FILE, report)
    record = read_report(new)
    assert record.reconstruction is Reconstruction.SAMPLE
    assert record.measures["var_real"] == 0.02 and record.measures["cov_term"] is None
    assert (record.best_epoch, record.stopped_epoch, record.early_stopped) == (2, 3, True)
    assert record.high_frequency_share == {"reconstructed": 0.25, "generated": 0.5}
    assert record.train == {"seed": 4} and record.data == report
    assert ReportRecord.from_json(json.loads(json.dumps(report))) == record

    old = RunFolder(tmp_path / "old").create()  # before the protocol and early stopping
    old.write_json(REPORT_FILE, {"mse": 0.02, "var_real": 0.1, "settings": {"train": {}}})
    record = read_report(old)
    assert record.reconstruction is Reconstruction.MEAN  # protocol_of's fallback
    assert record.early_stopped is None and record.best_epoch is None and record.spectrum is None
    assert record.high_frequency_share == {"reconstructed": None, "generated": None}
    old.write_json(CONFIG_FILE, {"train": {"reconstruction": "sample"}})  # recorded there only
    assert read_report(old).reconstruction is Reconstruction.SAMPLE
    old.write_json(REPORT_FILE, {"mse": "small"})
    with pytest.raises(InputError, match="report.json key mse: expected a number, got 'small'"):
        read_report(old)


def test_fid_number_is_one_reading_of_a_fid_result() -> None:
    """Every table, sort and gain reads an FID through `fid_number`: NaN, null, a missing entry
    or no result at all are one absence; a negative or huge value is read as it is."""
    from varloss.records import fid_number

    assert fid_number({"fid": 12.5, "kid": 0.1}) == 12.5
    assert fid_number({"fid": -1e-9}) == -1e-9  # rounding can leave a tiny negative FID
    assert fid_number({"fid": 3e7}) == 3e7
    assert fid_number({"fid": float("nan")}) is None
    assert fid_number({"fid": None}) is None
    assert fid_number({"kid": 0.1}) is None
    assert fid_number(None) is None and fid_number("12") is None
    assert fid_number({"fid": "n/a"}) is None and fid_number({"fid": True}) is None
    assert fid_number({"fid": "12.5"}) == 12.5  # a CSV cell


def test_the_remedy_table_sorts_by_fid_only_where_every_row_has_one() -> None:
    from varloss.pipelines.remedy_table import sort_by_headline

    def rows(fids: list[float], frechets: list[float]) -> dict[str, dict]:
        return {
            name: {"method": name, "fid": {"fid": fid}, "pixel_frechet": fd}
            for name, fid, fd in zip(("prior", "a", "b"), fids, frechets, strict=True)
        }

    table = rows([30.0, 10.0, 20.0], [1.0, 3.0, 2.0])
    assert sort_by_headline(table) == "fid" and list(table) == ["a", "b", "prior"]
    # a NaN FID is no FID: the headline falls back to pixel_frechet, whose NaN sorts last
    table = rows([30.0, float("nan"), 20.0], [float("nan"), -0.5, 2.0])
    assert sort_by_headline(table) == "pixel_frechet" and list(table) == ["a", "b", "prior"]
