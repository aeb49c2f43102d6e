"""The study end to end on a tiny spec (digits, 1 epoch): local, skip on re-run, resume,
a failing run, the Dask LocalCluster executor and the CLI."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from varloss.cli import app
from varloss.errors import InputError
from varloss.pipelines.study import parse_spec, run_study
from varloss.pipelines.study.executors import derive_run
from varloss.variance.fit import fit_line, fit_origin

TINY = """
name: tiny
defaults: {dataset: digits, latent: 2, epochs: 1, limit: 240, batch_size: 60, seed: 1}
hyper:
  dense: {hidden_sizes: [32]}
grid:
  family: [dense, conv]
"""


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def local_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("study") / "out"
    return out, run_study(parse_spec(TINY), out, progress=False)


@pytest.mark.slow
def test_local_study_writes_rows_from_the_run_reports(local_study: tuple[Path, object]) -> None:
    out, result = local_study
    spec = parse_spec(TINY)
    ids = [r.run_id for r in spec.runs]
    assert result.ran == ids and result.skipped == [] and result.failed == {}
    for name in ("results.csv", "fit.json", "figure.png", "figure.svg", "study.yaml"):
        assert (out / name).is_file(), name
    rows = _read_csv(out / "results.csv")
    assert [r["run_id"] for r in rows] == ids
    for row, run in zip(rows, spec.runs, strict=True):
        run_dir = out / "runs" / run.run_id
        report = json.loads((run_dir / "report.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        assert config["family"] == run.family == row["family"]
        assert row["dataset"] == "digits" and int(row["latent"]) == 2 and int(row["seed"]) == 1
        for key in ("mse", "var_real", "var_reconstructed", "var_generated", "bias2", "cov_term"):
            assert float(row[key]) == report[key], key  # float64 carried exactly
        loss = float(row["variance_loss_reconstructed"])
        # the decomposition var(x) - var(x_hat) = mse - bias² + cov term holds for each run
        assert loss == pytest.approx(float(row["var_real"]) - float(row["var_reconstructed"]))
        assert loss == pytest.approx(
            float(row["mse"]) - float(row["bias2"]) + float(row["cov_term"]), abs=1e-9
        )
        assert float(row["train_seconds"]) > 0
    fit = json.loads((out / "fit.json").read_text())
    mse = [float(r["mse"]) for r in rows]
    line = fit_line(mse, [float(r["variance_loss_reconstructed"]) for r in rows])
    numbers = ("slope", "intercept", "r2", "n")
    assert [fit["reconstructed"][key] for key in numbers] == pytest.approx(
        [getattr(line, key) for key in numbers]
    )
    origin = fit_origin(mse, [float(r["variance_loss_generated"]) for r in rows])
    assert [fit["generated_origin"][key] for key in numbers] == pytest.approx(
        [getattr(origin, key) for key in numbers]
    )
    assert fit["reconstructed"]["slope_ci95"] is None  # 2 runs: too few to bootstrap
    assert [r["reconstruction"] for r in rows] == [fit["reconstruction"][0]] * 2
    assert fit["name"] == "tiny" and fit["n_runs"] == 2


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_resumes_an_unfinished_one(
    local_study: tuple[Path, object],
) -> None:
    out, first = local_study
    weights = sorted((out / "runs").glob("*/model.safetensors"))
    stamps = [os.stat(p).st_mtime_ns for p in weights]
    again = run_study(parse_spec(TINY), out, progress=False)
    assert again.ran == [] and again.skipped == first.ran
    assert [os.stat(p).st_mtime_ns for p in weights] == stamps  # nothing retrained
    assert again.rows == first.rows

    # a run without report.json counts as unfinished: it is resumed from its checkpoint
    run_dir = out / "runs" / first.ran[0]
    report = json.loads((run_dir / "report.json").read_text())
    (run_dir / "report.json").unlink()
    resumed = run_study(parse_spec(TINY), out, progress=False)
    assert resumed.ran == [first.ran[0]] and resumed.skipped == [first.ran[1]]
    assert json.loads((run_dir / "study_run.json").read_text())["resumed"] is True
    again_report = json.loads((run_dir / "report.json").read_text())
    assert again_report["mse"] == pytest.approx(report["mse"], rel=1e-6)


def test_runs_differing_only_in_protocol_train_one_model(tmp_path: Path) -> None:
    """dense with reconstruction [sample, mean] trains once; the twin is measured from the same
    weights and history with its own protocol, and is skipped like any finished run after."""
    text = TINY.replace("family: [dense, conv]", "family: dense\n  reconstruction: [sample, mean]")
    spec = parse_spec(text)
    out = tmp_path / "out"
    result = run_study(spec, out, progress=False, jobs=1)
    trained, twin = spec.runs
    assert result.ran == [trained.run_id, twin.run_id] and result.failed == {}
    folders = [out / "runs" / run.run_id for run in (trained, twin)]
    reports = [json.loads((folder / "report.json").read_text()) for folder in folders]
    protocols = [r["settings"]["evaluation"]["reconstruction"] for r in reports]
    assert protocols == ["sample", "mean"]
    assert reports[0]["history"] == reports[1]["history"]  # the same training, recorded once
    weights = [(folder / "model.safetensors").read_bytes() for folder in folders]
    assert weights[0] == weights[1]
    timing = json.loads((folders[1] / "study_run.json").read_text())
    assert timing["derived_from"] == trained.run_id
    assert "derived_from" not in json.loads((folders[0] / "study_run.json").read_text())
    assert reports[0]["mse"] != reports[1]["mse"]  # measured again, through posterior draws
    assert reports[0]["var_generated"] == reports[1]["var_generated"]  # same model, same seed
    rows = _read_csv(out / "results.csv")
    assert [row["reconstruction"] for row in rows] == ["sample", "mean"]
    again = run_study(spec, out, progress=False, jobs=1)
    assert again.ran == [] and again.skipped == result.ran

    # a twin left half-made is made again; only what varloss wrote in its folder is deleted
    (folders[1] / "report.json").unlink()
    (folders[1] / "notes.txt").write_text("mine")
    (folders[1] / "checkpoint" / "mine.txt").write_text("mine too")
    remade = run_study(spec, out, progress=False, jobs=1)
    assert remade.ran == [twin.run_id] and remade.failed == {}
    assert (folders[1] / "notes.txt").read_text() == "mine"
    assert (folders[1] / "checkpoint" / "mine.txt").read_text() == "mine too"
    report = json.loads((folders[1] / "report.json").read_text())
    assert report["mse"] == reports[1]["mse"]  # the same weights, the same protocol and seed

    # a twin folder holding only files varloss did not write is refused, and nothing deleted
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "history.csv").write_text("the user's own")
    with pytest.raises(InputError, match=r"^study run folder .* holds files varloss did not"):
        derive_run(twin.to_dict(), str(foreign), str(folders[0]))
    assert [p.name for p in foreign.iterdir()] == ["history.csv"]  # no lock file left either
    assert (foreign / "history.csv").read_text() == "the user's own"


def test_a_twin_of_a_failed_run_fails_with_the_reason(tmp_path: Path) -> None:
    text = TINY.replace("family: [dense, conv]", "family: dense\n  reconstruction: [sample, mean]")
    text = text.replace("dataset: digits", f"dataset: 'npz:{tmp_path}/missing.npz'")
    spec = parse_spec(text)
    result = run_study(spec, tmp_path / "out", progress=False, jobs=1)
    trained, twin = spec.runs
    assert "missing.npz" in result.failed[trained.run_id]
    assert result.failed[twin.run_id] == (
        f"RuntimeError: it is measured from the model of run {trained.run_id}, which did not finish"
    )


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path: Path) -> None:
    text = TINY.replace("family: [dense, conv]", "family: [dense]") + (
        f"runs:\n  - {{family: dense, dataset: 'npz:{tmp_path}/missing.npz'}}\n"
    )
    result = run_study(parse_spec(text), tmp_path / "out", progress=False)
    assert len(result.rows) == 1 and len(result.failed) == 1
    ((failed_id, message),) = result.failed.items()
    assert failed_id.startswith("dense-npz") and "missing.npz" in message
    assert len(_read_csv(tmp_path / "out" / "results.csv")) == 1


@pytest.mark.slow
def test_skip_unavailable_leaves_out_runs_without_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = TINY.replace("family: [dense, conv]", "family: [dense]") + (
        f"runs:\n  - {{family: dense, dataset: 'npz:{tmp_path}/missing.npz'}}\n"
        f"  - {{family: conv, dataset: 'npz:{tmp_path}/missing.npz'}}\n"
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    args = ["study", "--preset", str(spec), "--out", str(tmp_path / "out"), "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--no-report", "--skip-unavailable"])
    assert result.exit_code == 0, result.output  # nothing failed: two runs left out
    assert "1 trained now, 0 already done, 0 failed, 2 left out" in result.output
    lines = [line for line in result.output.splitlines() if "missing.npz" in line]
    assert len(lines) == 1  # one line for both runs
    assert "left out 2 runs, data set unavailable" in result.output
    assert len(_read_csv(tmp_path / "out" / "results.csv")) == 1
    # Without the flag the same runs fail, and the exit code says so.
    failing = CliRunner().invoke(app, [*args, "--no-report"])
    assert failing.exit_code == 1 and "0 trained now, 1 already done, 2 failed" in failing.output


@pytest.mark.slow
def test_dask_local_cluster_two_workers_gives_the_same_rows(
    tmp_path: Path, local_study: tuple[Path, object]
) -> None:
    pytest.importorskip("distributed")
    _, local = local_study
    result = run_study(parse_spec(TINY), tmp_path / "dask", executor="dask", jobs=2, progress=False)
    assert sorted(result.ran) == sorted(local.ran) and result.failed == {}
    assert [r.run_id for r in result.rows] == [r.run_id for r in local.rows]
    for got, want in zip(result.rows, local.rows, strict=True):
        for key in ("mse", "variance_loss_reconstructed", "variance_loss_generated"):
            # same seed, same data: equal up to float reduction order across thread counts
            assert getattr(got, key) == pytest.approx(getattr(want, key), rel=1e-4, abs=1e-7)
    assert (tmp_path / "dask" / "figure.png").is_file()


@pytest.mark.slow
def test_cli_continues_a_finished_study_and_prints_the_fit(
    local_study: tuple[Path, object], tmp_path: Path
) -> None:
    out, first = local_study
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(TINY)
    result = CliRunner().invoke(
        app,
        ["study", "--preset", str(spec_file), "--out", str(out), "--no-progress", "--no-report"],
    )
    assert result.exit_code == 0, result.output
    assert "2/2 runs finished (0 trained now, 2 already done, 0 failed)" in result.output
    slope = json.loads((out / "fit.json").read_text())["reconstructed"]["slope"]
    assert f"slope {slope:.3f}" in result.output
    assert f"figure: {out / 'figure.png'}" in result.output
    assert not math.isnan(np.float64(slope))
