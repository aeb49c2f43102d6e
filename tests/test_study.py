"""Study spec validation, run ids, results.csv, the fits and the figure (no training here)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from varloss.cli import app
from varloss.errors import InputError
from varloss.figures import plot_study
from varloss.models import MODEL_FAMILIES
from varloss.pipelines.study import (
    EXECUTORS,
    RESULT_COLUMNS,
    RUN_FIELDS,
    RunSpec,
    fit_results,
    load_spec,
    parse_spec,
    preset_names,
    register_executor,
    write_results,
)
from varloss.records import ResultsRow, read_results
from varloss.runs import RunFolder
from varloss.train_config import TrainConfig
from varloss.variance.fit import fit_line, fit_origin

SPEC = """
name: tiny
defaults: {epochs: 1, limit: 100, seed: 3}
hyper:
  dense: {hidden_sizes: [32]}
grid:
  family: [dense, conv]
  dataset: digits
  latent: [2, 4]
runs:
  - {family: resnet, dataset: digits, latent: 4, loss: gaussian, hyper: {blocks: 2}}
  - {family: dense, dataset: digits, latent: 2}   # the same as a grid run: kept once
"""


def test_grid_crosses_lists_in_order_with_defaults_and_family_hyper() -> None:
    spec = parse_spec(SPEC)
    assert spec.name == "tiny" and spec.preset is None and not spec.quick
    got = [(r.family, r.latent, r.loss, r.seed, r.limit, r.epochs) for r in spec.runs]
    assert got == [
        ("dense", 2, "bernoulli", 3, 100, 1),
        ("dense", 4, "bernoulli", 3, 100, 1),
        ("conv", 2, "bernoulli", 3, 100, 1),
        ("conv", 4, "bernoulli", 3, 100, 1),
        ("resnet", 4, "gaussian", 3, 100, 1),
    ]
    assert spec.runs[0].hyper == {"hidden_sizes": [32]}
    assert spec.runs[2].hyper == {}
    assert spec.runs[4].hyper == {"blocks": 2}
    assert len({r.run_id for r in spec.runs}) == 5


def test_run_id_is_readable_and_hashes_every_setting_but_the_data_path() -> None:
    run = RunSpec(family="conv", dataset="fashion-mnist", latent=16, epochs=2, loss="bernoulli")
    settings = {
        "family": "conv",
        "dataset": "fashion-mnist",
        "latent": 16,
        "epochs": 2,
        "loss": "bernoulli",
        "seed": 0,
        "limit": None,
        "batch_size": None,
        "lr": None,
        "hyper": {},
    }
    digest = hashlib.sha256(
        json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:8]
    assert run.settings() == settings
    assert run.run_id == f"conv-fashion_mnist-z16-e2-bernoulli-s0-{digest}"
    moved = RunSpec(**{**run.to_dict(), "data_path": "/elsewhere"})
    assert moved.run_id == run.run_id
    other = RunSpec(**{**run.to_dict(), "limit": 500})
    assert other.run_id.rsplit("-", 1)[0] == run.run_id.rsplit("-", 1)[0]
    assert other.run_id != run.run_id
    assert RunSpec(**{**run.to_dict(), "hyper": {"hidden": 64}}).run_id != run.run_id


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("grid: {family: dense, dataset: digits, latent: 2, epochs: 1}\nfoo: 1", ["'foo'"]),
        ("grid: {family: dense, dataset: digits, latent: 2, epoch: 1}", ["grid", "'epoch'"]),
        ("grid: {family: mlp, dataset: digits, latent: 2, epochs: 1}", ["'family'", "mlp"]),
        ("grid: {family: dense, dataset: digits, latent: 0, epochs: 1}", ["latent", "positive"]),
        ("grid: {family: dense, dataset: digits, latent: 2.5, epochs: 1}", ["latent", "2.5"]),
        ("grid: {family: dense, dataset: digits, latent: true, epochs: 1}", ["latent", "True"]),
        # the trainer's sentence (TrainConfig's rule), after the spec's place
        ("grid: {family: dense, dataset: digits, latent: 2, epochs: 1, seed: yes}", ["seed must"]),
        ("grid: {family: dense, dataset: digits, latent: 2, epochs: 1, seed: -1}", ["seed must"]),
        ("grid: {family: dense, dataset: imagenet, latent: 2, epochs: 1}", ["'dataset'"]),
        ("grid: {family: dense, dataset: digits, latent: [], epochs: 1}", ["latent", "empty"]),
        ("grid: {family: dense, dataset: digits, latent: 2}", ["no 'epochs'"]),
        (
            "runs:\n  - {family: dense, dataset: digits, latent: 2, epochs: 1, loss: l1}",
            ["runs[0]"],
        ),
        ("runs:\n  - {family: dense, dataset: digits, latent: 2, epochs: 1, lr: -1}", ["lr", "-1"]),
        ("name: empty", ["no runs"]),
        ("grid: [family: dense", ["not valid YAML"]),
        ("- 1\n- 2", ["mapping"]),
    ],
)
def test_bad_specs_name_the_field(text: str, words: list[str]) -> None:
    with pytest.raises(InputError) as raised:
        parse_spec(text, where="spec.yaml")
    message = str(raised.value)
    assert message.startswith("spec.yaml")
    for word in words:
        assert word in message


def test_presets_quick_and_paper() -> None:
    assert {"quick", "paper"} <= set(preset_names())
    quick = load_spec("quick")
    assert quick.quick and quick.preset == "quick"
    assert len(quick.runs) >= 8
    families = {r.family for r in quick.runs}
    assert {"dense", "conv", "resnet"} <= families and families & {"draw", "convdraw"}
    assert {r.dataset for r in quick.runs} <= {"mnist", "fashion-mnist"}
    assert all(r.limit is not None for r in quick.runs)  # subsets: it must fit in 10 minutes
    paper = load_spec("paper")
    assert not paper.quick and len(paper.runs) >= 24
    assert {"mnist", "fashion-mnist", "cifar10", "celeba"} <= {r.dataset for r in paper.runs}
    assert {"dense", "conv", "resnet", "draw", "convdraw"} <= {r.family for r in paper.runs}
    assert all(r.limit is None for r in paper.runs)
    # the study presets reconstruct through the sampling layer, as the seed's example does
    assert {r.reconstruction for r in quick.runs + paper.runs} == {"sample"}


def test_preset_standard_is_converged_varied_and_fits_an_hour() -> None:
    """The standard preset's promises, read from the spec (its full run is not a test)."""
    standard = load_spec("standard")
    assert standard.preset == "standard" and not standard.quick
    runs = standard.runs
    assert len(runs) >= 20 and len({r.run_id for r in runs}) == len(runs)
    assert len({r.family for r in runs}) >= 4
    # the offline data sets, grey and colour; every family on each
    assert {r.dataset for r in runs} == {"mnist", "fashion-mnist", "patches"}
    for dataset in ("mnist", "fashion-mnist", "patches"):
        assert {r.family for r in runs if r.dataset == dataset} == set(MODEL_FAMILIES)
    # the iterative families anneal their learning rate, the others keep it constant
    assert {r.family for r in runs if r.schedule == "cosine"} == {"draw", "convdraw"}
    assert {r.schedule for r in runs if r.family not in ("draw", "convdraw")} == {"constant"}
    assert all(r.patience is not None and r.patience >= 2 for r in runs)  # early stopping
    assert all(r.min_delta and r.min_delta > 0 for r in runs)  # a plateau, not a creeping loss
    latents = {r.latent for r in runs}
    assert min(latents) <= 2 and max(latents) >= 64
    dense = [r for r in runs if r.family == "dense"]
    assert {r.reconstruction for r in dense} == {"mean", "sample"}
    assert {r.reconstruction for r in runs if r.family != "dense"} == {"sample"}
    for run in runs:
        run.train_config("unused", None).validate()  # the trainer accepts every run


def test_load_spec_from_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(SPEC)
    assert [r.run_id for r in load_spec(path).runs] == [r.run_id for r in parse_spec(SPEC).runs]
    with pytest.raises(InputError, match="neither a preset"):
        load_spec(tmp_path / "missing.yaml")


def test_fit_line_matches_numpy_polyfit_and_r2_definition() -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(0.01, 0.05, 12)
    y = 0.93 * x + 0.002 + 0.001 * rng.standard_normal(12)
    fit = fit_line(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    r = np.corrcoef(x, y)[0, 1]
    assert fit.n == 12
    assert fit.slope == pytest.approx(slope, rel=1e-10)
    assert fit.intercept == pytest.approx(intercept, rel=1e-8)
    assert fit.r2 == pytest.approx(r**2, rel=1e-10)  # for a line with intercept R² = r²
    # non-finite pairs are left out
    with_nan = fit_line(np.append(x, [np.nan, 0.1]), np.append(y, [0.1, np.inf]))
    assert with_nan.n == 12 and with_nan.slope == pytest.approx(slope, rel=1e-10)
    assert fit_line([0.1], [0.2]).slope is None
    assert fit_line([0.1, 0.1], [0.2, 0.3]).slope is None


def test_fit_origin_closed_form() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([1.1, 1.9, 3.2, 3.9])
    fit = fit_origin(x, y)
    slope = float(x @ y / (x @ x))
    assert fit.slope == pytest.approx(slope, rel=1e-12)
    expected_r2 = 1 - np.sum((y - slope * x) ** 2) / np.sum((y - y.mean()) ** 2)
    assert fit.r2 == pytest.approx(expected_r2, rel=1e-12)
    assert fit.intercept == 0.0 and fit.n == 4


def _rows(n: int = 8) -> list[ResultsRow]:
    rng = np.random.default_rng(1)
    families = ["dense", "conv", "resnet", "draw"]
    rows = []
    for i in range(n):
        mse = 0.01 + 0.004 * i + 0.001 * rng.random()
        loss = 0.95 * mse + 0.0005 * rng.standard_normal()
        bias2 = 1e-4 * (1 + i)
        rows.append(
            ResultsRow(
                run_id=f"r{i}",
                family=families[i % 4],
                dataset="mnist" if i < n // 2 else "fashion-mnist",
                latent=16,
                epochs=2,
                loss="bernoulli",
                seed=0,
                limit=100,
                mse=mse,
                var_real=0.1,
                var_reconstructed=0.1 - loss,
                var_generated=0.1 - 1.2 * mse,
                variance_loss_reconstructed=loss,
                variance_loss_generated=1.2 * mse + 1e-3 * rng.standard_normal(),
                bias2=bias2,
                cov_term=loss - mse + bias2,
                train_seconds=1.5 + i,
            )
        )
    return rows


def test_results_csv_round_trips_float64_exactly(tmp_path: Path) -> None:
    rows = _rows()
    rows[2] = dataclasses.replace(rows[2], var_generated=None)  # not recorded: an empty cell
    path = write_results(rows, tmp_path / "results.csv")
    with path.open() as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == RESULT_COLUMNS
    assert [float(r["mse"]) for r in read] == [r.mse for r in rows]
    assert read[2]["var_generated"] == ""
    assert [r["family"] for r in read] == [r.family for r in rows]
    assert read_results(RunFolder(tmp_path)) == rows  # typed, and float64 exactly


def test_fit_results_and_figure(tmp_path: Path) -> None:
    rows = _rows()
    spec = parse_spec(SPEC)
    fit = fit_results(rows, spec)
    x = np.array([r.mse for r in rows])
    y_gen = np.array([r.variance_loss_generated for r in rows])
    assert fit.generated.slope == pytest.approx(np.polyfit(x, y_gen, 1)[0], rel=1e-10)
    assert fit.reconstructed.n == 8 and fit.name == "tiny" and fit.quick is False
    assert fit.origin.slope == pytest.approx(
        sum(r.mse * r.variance_loss_reconstructed for r in rows) / float(x @ x), rel=1e-12
    )
    json.dumps(fit.to_json())  # JSON-safe

    png = plot_study(rows, fit, tmp_path / "figure.png", quick=True)
    with Image.open(png) as image:
        assert image.width > 1000 and image.height > 500
    svg = (tmp_path / "figure.svg").read_text()
    assert "QUICK version" in svg
    assert f"slope {fit.reconstructed.slope:.3f}" in svg


def test_cli_rejects_unknown_preset_and_executor(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["study", "--preset", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "neither a preset" in str(result.exception)
    result = runner.invoke(
        app, ["study", "--preset", "quick", "--out", str(tmp_path), "--executor", "slurm"]
    )
    assert "unknown study executor 'slurm'; known: local, dask." in str(result.exception)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("limit", 1),  # the study used to accept it, training refused it
        ("limit", 0),
        ("latent", 0),
        ("epochs", -2),
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("lr", 0),
        ("lr", math.inf),
        ("lr", "0.01"),
        ("epochs", True),  # YAML's yes is not a number
    ],
)
def test_a_study_run_and_training_refuse_the_same_values(field: str, value: object) -> None:
    with pytest.raises(InputError) as by_training:
        TrainConfig(**{field: value}).validate()
    run = {"family": "dense", "dataset": "digits", "latent": 2, "epochs": 1, field: value}
    with pytest.raises(InputError) as by_spec:
        parse_spec({"runs": [run]}, where="spec.yaml")
    # the same sentence, with the spec's place in front
    assert str(by_spec.value) == f"spec.yaml runs[0]: {by_training.value}"


def test_values_training_accepts_are_accepted_by_the_study() -> None:
    run = {"family": "dense", "dataset": "digits", "latent": 1, "epochs": 1, "limit": 2}
    (spec_run,) = parse_spec({"runs": [{**run, "batch_size": 1, "lr": 1e-6}]}).runs
    spec_run.train_config(out="x").validate()
    assert (spec_run.limit, spec_run.batch_size, spec_run.lr) == (2, 1, 1e-6)


def test_run_fields_are_train_config_fields() -> None:
    trainer = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(RUN_FIELDS) <= set(trainer)
    for name in ("seed", "loss", "limit", "data_path"):  # optional run fields: the same default
        default = next(f.default for f in dataclasses.fields(RunSpec) if f.name == name)
        assert default == trainer[name].default, name


def test_executor_registry_refuses_clashes_and_bad_names() -> None:
    assert set(EXECUTORS) == {"local", "dask"}
    with pytest.raises(InputError, match="study executor 'local' is already registered"):
        register_executor("local", lambda tasks, settings: iter(()))
    assert register_executor("local", EXECUTORS["local"]) is EXECUTORS["local"]  # a no-op
    with pytest.raises(ValueError, match="executor name"):
        register_executor("Not A Name", lambda tasks, settings: iter(()))
    with pytest.raises(TypeError, match="callable"):
        register_executor("queue", "not a function")  # type: ignore[arg-type]
    assert "queue" not in EXECUTORS
