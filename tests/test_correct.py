"""The `correct` pipeline: one report schema, the folder's lock and manifest, numbers that agree
with an independent recomputation from the saved samplers, resuming from them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from _digits_vae import digits_images, numpy_pixel_variance, trained_vae, untrained_vae

from varloss.errors import InputError
from varloss.models import save_model
from varloss.pipelines.correct import correct, gap_closed
from varloss.runs import RunFolder
from varloss.samplers import ALL_METHODS, load_sampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Small fits: an untrained model and these settings make a correct run take about a second.
SMALL_PARAMS = {
    "match": {"n_fit": 300, "iterations": 10},
    "temperature": {"n_fit": 200, "scan_points": 6},
    "gmm": {"n_components": 2},
}


def _run_folder(model: torch.nn.Module, path, limit: int | None = 300):
    """A train run folder as `varloss train` leaves it: config, weights, sealed manifest."""
    save_model(model, path, extra={"train": {"dataset": "digits", "limit": limit}})
    RunFolder(path).seal()
    return path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return _run_folder(untrained_vae(), tmp_path_factory.mktemp("quick") / "run")


def _quick(run, method, out, **options):
    options = {"n_samples": 200, "sampler_params": SMALL_PARAMS, "fid": "off", **options}
    return correct(run, method, out, progress=False, **options)


def test_gap_closed_arithmetic():
    assert gap_closed(0.10, 0.06, 0.10) == pytest.approx(1.0)
    assert gap_closed(0.10, 0.06, 0.08) == pytest.approx(0.5)
    assert gap_closed(0.10, 0.06, 0.12) == pytest.approx(0.5)  # overshoot counts as gap
    assert gap_closed(0.10, 0.06, 0.04) == pytest.approx(-0.5)
    assert gap_closed(0.10, 0.10, 0.04) is None


def test_correct_rejects_bad_arguments(quick_run, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        correct(tmp_path / "nowhere", "match")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no saved model"):
        correct(tmp_path / "empty", "match")
    with pytest.raises(InputError, match="unknown correction method 'sharpen'; known: prior"):
        correct(quick_run, "sharpen")
    with pytest.raises(InputError, match="fid must be one of"):
        correct(quick_run, "match", fid="sometimes")
    with pytest.raises(InputError, match="n_samples"):
        correct(quick_run, "match", n_samples=1)
    with pytest.raises(InputError, match="pixel_frechet_k must be a positive integer, got 0"):
        correct(quick_run, "match", pixel_frechet_k=0)
    with pytest.raises(InputError, match="unknown methods"):
        correct(quick_run, "match", sampler_params={"sharpen": {}})
    save_model(untrained_vae(), tmp_path / "no-dataset")
    with pytest.raises(InputError, match="does not name the training dataset"):
        correct(tmp_path / "no-dataset", "match")
    assert not (tmp_path / "no-dataset" / "correct").exists()
    assert not (quick_run / "correct").exists()  # nothing written for a refused call


@pytest.mark.slow
def test_the_cli_says_what_is_wrong_without_a_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    command = [sys.executable, "-m", "varloss", "correct", str(tmp_path / "empty"), "-m", "match"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode != 0
    assert "no saved model" in finished.stderr and "Traceback" not in finished.stderr


def test_one_and_several_methods_write_the_same_schema(quick_run, tmp_path):
    one = _quick(quick_run, "match", tmp_path / "one")
    several = _quick(quick_run, "temperature,match", tmp_path / "several")
    for report, folder in ((one, "one"), (several, "several")):
        assert json.loads((tmp_path / folder / "report.json").read_text()) == report
    assert set(one) == set(several) == {"method", "baseline", "methods", "table", "settings"}
    assert set(one["methods"]) == {"prior", "match"}
    assert set(several["methods"]) == {"prior", "temperature", "match"}
    # rows in the headline's order: pixel_frechet, lowest first, without FID
    assert several["settings"]["headline"] == "pixel_frechet"
    frechet = [row["pixel_frechet"] for row in several["methods"].values()]
    assert frechet == sorted(frechet) and len(set(frechet)) == 3
    assert [row["method"] for row in several["table"]] == list(several["methods"])
    assert set(one["methods"]["match"]) == set(several["methods"]["temperature"])
    assert set(one["table"][0]) == set(several["table"][2])
    # same seed, same sampler: the match rows agree across the two calls
    for key in ("var_real", "var_generated", "gap_closed"):
        assert one["methods"]["match"][key] == several["methods"]["match"][key]
    assert one["baseline"] == one["methods"]["prior"]
    assert one["methods"]["prior"]["gap_closed"] == pytest.approx(0.0)
    assert one["method"] == "prior,match"
    assert several["settings"]["methods"] == ["prior", "temperature", "match"]


def test_fid_off(quick_run, tmp_path):
    off = _quick(quick_run, "prior", tmp_path / "off", fid=False)
    assert off["baseline"]["fid"] is None and "--fid off" in off["baseline"]["fid_reason"]
    assert off["settings"]["fid"] == "off" and off["settings"]["fid_features"] is None


def test_correct_folder_is_locked_and_sealed(quick_run, tmp_path):
    out = tmp_path / "out"
    with RunFolder(out).lock(), pytest.raises(InputError, match="in use by another"):
        _quick(quick_run, "match", out)
    assert not (out / "report.json").exists()
    _quick(quick_run, "match", out)
    folder = RunFolder(out)
    assert folder.verify("report.json") and folder.verify("samples.png")
    # each sampler folder carries its own manifest (the correct manifest leaves it to it)
    assert RunFolder(out / "samplers" / "match").verify("state.safetensors")
    assert not any(name.startswith("samplers/") for name in folder.manifest())
    (out / "report.json").write_text("{}")
    with pytest.raises(InputError, match=r"report\.json is damaged"):
        folder.verify("report.json")


def test_damaged_model_is_named_not_used(tmp_path):
    run = _run_folder(untrained_vae(), tmp_path / "run")
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(InputError, match=r"model\.safetensors is damaged"):
        _quick(run, "match", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_damaged_saved_sampler_is_fitted_again(quick_run, tmp_path):
    out = tmp_path / "out"
    first = _quick(quick_run, "match", out)
    state = out / "samplers" / "match" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:-8])
    again = _quick(quick_run, "match", out)
    assert again["methods"]["match"]["sampler_source"] == "fitted"
    assert again["methods"]["match"]["var_generated"] == first["methods"]["match"]["var_generated"]
    assert RunFolder(state.parent).verify("state.safetensors")


@pytest.mark.slow
def test_correct_all_closes_the_gap_and_resumes(tmp_path):
    images = digits_images()
    model = trained_vae(images)
    run = _run_folder(model, tmp_path / "run", limit=None)
    out = tmp_path / "correct"
    params = {name: {"steps": 600} for name in ALL_METHODS if name.startswith("two-stage")}
    params.update(gmm={"n_components": 3}, match={"n_fit": 1000}, temperature={"n_fit": 500})
    options = {"n_samples": 600, "sampler_params": params, "fid": "off", "progress": False}
    report = correct(run, "all", out, **options)
    assert report["method"] == "all" and set(report["methods"]) == set(ALL_METHODS)
    assert (out / "samples.png").stat().st_size > 1000
    for name in ALL_METHODS:
        assert (out / "samplers" / name / "state.safetensors").is_file()
    # var_generated agrees with an independent computation from the saved sampler
    match = load_sampler(out / "samplers" / "match", model)
    # seed 0's evaluation-code stream: index -1 of the epoch-seed rule
    codes_seed = (0 * 1_000_003 - 1 * 7919 + 17) % (2**63 - 1)
    assert report["settings"]["codes_seed"] == codes_seed
    regenerated = match.sample(600, torch.Generator().manual_seed(codes_seed))
    entry, baseline = report["methods"]["match"], report["baseline"]
    assert entry["var_generated"] == pytest.approx(numpy_pixel_variance(regenerated), rel=1e-6)
    expected = 1 - abs(entry["var_real"] - entry["var_generated"]) / abs(
        baseline["var_real"] - baseline["var_generated"]
    )
    assert entry["gap_closed"] == pytest.approx(expected)
    assert entry["gap_closed"] > 0.8
    assert report["methods"]["temperature"]["gap_closed"] > 0.5
    # the two-stage variants share one fitted second stage
    sources = {name: report["methods"][name]["sampler_source"] for name in ALL_METHODS}
    assert sources["two-stage-raw"] == sources["two-stage-spherical"] == "variant"
    # a second call resumes: every sampler is loaded, numbers are identical
    again = correct(run, "all", out, **options)
    assert {row["sampler_source"] for row in again["methods"].values()} == {"loaded"}
    assert again["table"] == report["table"]


_CORRECT_KILLER = """
import json, sys
from varloss.pipelines.correct import correct
run, out, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
correct(run, "prior,temperature", out, n_samples=200, sampler_params=params, fid="off",
        seed=1, progress=False)
"""


@pytest.mark.parametrize(
    "point", ["correct:report-removed", "correct:samples-written", "correct:report-written"]
)
def test_a_kill_between_corrects_writes_never_leaves_an_old_report_on_new_samples(
    quick_run, tmp_path, point
):
    """correct rewrites samples.png, then report.json, then the manifest: killed between any two,
    the folder holds no report describing other samples than its own (the train page shows no
    remedies, or the new ones), and the same command finishes it."""
    import os

    from varloss._io import FAULT_ENV, FAULT_EXIT_CODE
    from varloss.runs import REPORT_FILE, SAMPLES_FILE

    out = tmp_path / "correct"
    old = _quick(quick_run, "prior,temperature", out, seed=0)
    old_grid = (out / SAMPLES_FILE).read_bytes()
    env = {**os.environ, FAULT_ENV: point, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run(
        [sys.executable, "-c", _CORRECT_KILLER, str(quick_run), str(out), json.dumps(SMALL_PARAMS)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr
    folder = RunFolder(out)
    if folder.exists(REPORT_FILE):  # only after the new report is in place
        report = folder.read_json(REPORT_FILE)
        assert point == "correct:report-written" and report["settings"]["seed"] == 1
        assert (out / SAMPLES_FILE).read_bytes() != old_grid
    else:
        assert point != "correct:report-written"
    again = _quick(quick_run, "prior,temperature", out, seed=1)
    assert again["settings"]["seed"] == 1 and again != old
    assert folder.read_json(REPORT_FILE) == again
