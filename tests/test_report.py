"""The HTML report: kind detection, the numbers on the page against numpy, sections that appear
only when their data exists, self-containment, and clean failures on bad input.

The folders are written by varloss itself (a tiny real `train` run on the digits set, `correct`
on it, a two-run `study`, `measure` outputs), so the page is tested on what the pipelines
really write; the numbers are checked against numpy computed from the data and the saved model.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image

import varloss
from varloss import data
from varloss.cli import app
from varloss.errors import InputError
from varloss.models import load_model
from varloss.pipelines.correct import correct
from varloss.pipelines.study import run_study
from varloss.pipelines.train import train
from varloss.report import (
    REPORT_KINDS,
    ReportKind,
    detect_kind,
    explain_variance,
    fmt,
    register_report_kind,
    render_report,
    write_report,
)
from varloss.runs import MAPS_FILE, RunFolder
from varloss.train_config import TrainConfig
from varloss.variance.protocol import protocol_of

# ---------------------------------------------------------------------------------------------
# folders written by varloss

TRAIN = {"epochs": 2, "latent": 2, "seed": 3, "limit": 200, "eval_limit": 120, "fid": "off"}
REMEDIES = "prior,temperature,match"


def build_train_run(path: Path, command: str | None = "varloss train (test)") -> Path:
    """A finished tiny `varloss train` run (dense VAE on digits, about 2 s)."""
    config = TrainConfig(family="dense", dataset="digits", out=str(path), **TRAIN)
    train(config, progress=False, command=command)
    return path


def build_study(path: Path) -> Path:
    """A finished two-run `varloss study` (dense VAEs on digits, latent 2 and 3)."""
    spec = path.parent / f"{path.name}-spec.yaml"
    spec.write_text(
        "name: tiny\n"
        "defaults: {family: dense, dataset: digits, epochs: 1, limit: 150, seed: 0}\n"
        "grid:\n  - latent: [2, 3]\n"
    )
    run_study(
        spec, path, jobs=1, progress=False, command=f"varloss study --preset {spec} --out {path}"
    )
    return path


@pytest.fixture(scope="module")
def train_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_train_run(tmp_path_factory.mktemp("train") / "run")


@pytest.fixture(scope="module")
def corrected_run(tmp_path_factory: pytest.TempPathFactory, train_run: Path) -> Path:
    run = tmp_path_factory.mktemp("corrected") / "run"
    shutil.copytree(train_run, run)
    correct(run, REMEDIES, fid="off", progress=False, train_limit=200)
    return run


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_study(tmp_path_factory.mktemp("study") / "study")


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


# ---------------------------------------------------------------------------------------------
# reading the page back


class _Page(HTMLParser):
    """Tables by id (cells with text and data-value), <img> attributes, all text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.headers: dict[str, list[str]] = {}
        self.images: list[dict[str, str]] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table" and attributes.get("id"):
            self._table = attributes["id"]
            self.tables[self._table] = []
            self.headers[self._table] = []
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr" and self._table and not self._in_head:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell, self._value = [], attributes.get("data-value")
        elif tag == "img":
            self.images.append({k: v or "" for k, v in attributes.items()})

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None and self._table:
            text = "".join(self._cell).strip()
            if self._in_head:
                self.headers[self._table].append(text)
            else:
                self.tables[self._table][-1].append((text, self._value))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def headline(page: _Page) -> dict[str, float]:
    return {row[0][0]: float(row[1][1]) for row in page.tables["headline"] if row[1][1]}


def key_facts(html: str) -> dict[str, str]:
    """The settings' label -> value pairs (the first of each label: the run's facts come before
    the rendering's)."""
    pairs = re.findall(r'<th scope="row">([^<]*)</th><td><code>([^<]*)</code>', html)
    facts: dict[str, str] = {}
    for key, value in pairs:
        facts.setdefault(unescape(key), unescape(value))
    return facts


def decode_png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    image.load()
    return image


def image_bytes(page: _Page, alt: str) -> bytes:
    source = next(image["src"] for image in page.images if alt in image["alt"])
    return base64.b64decode(source.split(",", 1)[1])


def assert_self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "url(http" not in html and "@import" not in html
    assert '<meta name="viewport"' in html


def cli_params(command: str, argv: list[str]) -> dict:
    """The parameters the real CLI parses from `argv` (nothing is run)."""
    return typer.main.get_command(app).commands[command].make_context(command, argv).params


# ---------------------------------------------------------------------------------------------
# train runs


@pytest.mark.slow  # trains a tiny VAE (module fixture), a few seconds
def test_detect_kind_of_each_output(corrected_run: Path, tmp_path: Path) -> None:
    measure_folder = tmp_path / "measure"
    measure_folder.mkdir()
    varloss.measure(np.random.default_rng(0).random((20, 4))).to_json(measure_folder / "m.json")
    assert detect_kind(corrected_run) == "train"
    assert detect_kind(corrected_run / "correct") == "correct"
    assert detect_kind(measure_folder) == "measure"
    assert list(REPORT_KINDS) == ["study", "correct", "train", "measure"]


@pytest.mark.slow  # trains a tiny VAE (module fixture), a few seconds
def test_train_report_numbers_match_numpy(train_run: Path, tmp_path: Path) -> None:
    run = _copy(train_run, tmp_path)
    path = write_report(run, command="varloss report RUN")
    html = path.read_text()
    assert_self_contained(html)
    page = parse(html)
    numbers = headline(page)
    # Independent: the saved model's reconstructions of the test images, in numpy float64.
    real = data.load("digits", "test", limit=TRAIN["eval_limit"]).images
    with torch.no_grad():
        rec = load_model(run).eval().reconstruct(real).double().numpy()
    real = real.double().numpy()
    var_real, var_rec = np.var(real, axis=0).mean(), np.var(rec, axis=0).mean()
    mse = np.mean((real - rec) ** 2)
    assert numbers["variance, real"] == pytest.approx(var_real, rel=1e-9)
    assert numbers["variance, reconstructed"] == pytest.approx(var_rec, rel=1e-6)
    assert numbers["MSE"] == pytest.approx(mse, rel=1e-6)
    assert numbers["ratio variance loss / MSE"] == pytest.approx((var_real - var_rec) / mse, 1e-5)
    # The identity row is computed by the page from mse, bias² and cov; numpy gives the loss.
    assert numbers["MSE - bias² + covariance term"] == pytest.approx(var_real - var_rec, 1e-5)
    assert numbers["images, generated"] == TRAIN["eval_limit"]
    row = next(r for r in page.tables["headline"] if r[0][0] == "MSE")
    assert row[1][0] == fmt(float(row[1][1]))
    text = " ".join(page.text)
    assert f"keep {var_rec / var_real:.0%} of the real images' per-pixel variance" in text
    # The maps are the run's maps.npz (its real map averages to the real variance), the
    # curves come from history.csv and the samples are samples.png byte for byte.
    with np.load(run / MAPS_FILE) as maps:
        assert maps["var_real"].mean() == pytest.approx(var_real, rel=1e-9)
    alts = [image["alt"] for image in page.images]
    assert any("variance maps" in alt for alt in alts)
    assert any("loss and MSE per epoch" in alt for alt in alts)
    samples = image_bytes(page, "grid of real, reconstructed and generated")
    assert samples == (run / "samples.png").read_bytes()
    # The grid's caption names the protocol the run's report.json records, in its own words.
    protocol = protocol_of(json.loads((run / "report.json").read_text()))
    assert f"their reconstructions ({protocol.description}: the `{protocol.value}`" in text
    assert all(decode_png(image["src"]).size[0] > 100 for image in page.images)
    facts = key_facts(html)
    assert facts["command"] == "varloss train (test)"
    assert facts["seed"] == "3" and facts["data set"] == "digits" and facts["split"] == "test"
    assert "varloss report RUN" in text
    assert "remedies" not in page.tables  # no correct/ folder, no remedies section


@pytest.mark.slow  # trains a tiny VAE (module fixture), a few seconds
def test_train_run_without_maps_says_so_and_runs_no_model(train_run: Path, tmp_path: Path) -> None:
    run = _copy(train_run, tmp_path)
    RunFolder(run).unlink(MAPS_FILE)
    (run / "model.safetensors").unlink()  # a report that re-ran the model would fail now
    page = parse(render_report(run))
    assert not any("variance maps" in image["alt"] for image in page.images)
    assert "the run folder has no maps.npz" in " ".join(page.text)
    # curves, samples and the spectrum (from report.json) are still there
    assert sorted(image["alt"] for image in page.images) == [
        "grid of real, reconstructed and generated images",
        "training loss and MSE per epoch",
        "variance kept per frequency band and the per-band decomposition",
    ]


@pytest.mark.slow  # trains a tiny VAE (module fixture), a few seconds
def test_damaged_maps_are_named(train_run: Path, tmp_path: Path) -> None:
    run = _copy(train_run, tmp_path)
    (run / MAPS_FILE).write_bytes((run / MAPS_FILE).read_bytes()[:100])
    with pytest.raises(InputError, match="maps.npz"):
        render_report(run)


@pytest.mark.slow  # trains a tiny VAE (module fixture), a few seconds
def test_multichannel_maps_are_folded(train_run: Path, tmp_path: Path) -> None:
    run = _copy(train_run, tmp_path)
    rng = np.random.default_rng(0)
    maps = {"var_real": rng.random((3, 8, 8)), "var_generated": rng.random((3, 8, 8))}
    folder = RunFolder(run)
    folder.write_arrays(MAPS_FILE, maps)
    assert "mean over 3 channels" in render_report(run)


@pytest.mark.slow  # trains a tiny VAE (module fixture), a few seconds
def test_equivalent_train_command_parses_back_to_the_recorded_config(tmp_path: Path) -> None:
    run = build_train_run(tmp_path / "run", command=None)
    facts = key_facts(render_report(run))
    argv = shlex.split(facts["command (equivalent)"])
    assert argv[:2] == ["varloss", "train"]
    params = cli_params("train", argv[2:])
    recorded = json.loads((run / "report.json").read_text())["settings"]["train"]
    assert params["family"] == recorded["family"] == "dense"
    assert params["dataset"] == recorded["dataset"] == "digits"
    keys = ("epochs", "latent", "seed", "limit", "eval_limit", "batch_size", "lr", "out", "fid")
    for key in keys:
        assert params[key] == recorded[key], key


# ---------------------------------------------------------------------------------------------
# correct


@pytest.mark.slow  # trains a tiny VAE (module fixture), a few seconds
def test_correct_table_gap_closed_and_links(corrected_run: Path, tmp_path: Path) -> None:
    run = _copy(corrected_run, tmp_path)
    folder = run / "correct"
    page = parse(write_report(folder).read_text())
    report = json.loads((folder / "report.json").read_text())
    rows = {row[0][1]: row for row in page.tables["remedies"]}
    # rows in the report's headline order (pixel_frechet without FID), every method once
    assert list(rows) == list(report["methods"]) and set(rows) == set(REMEDIES.split(","))
    headers = page.headers["remedies"]
    assert headers[3] == "gap closed"
    fid_before = headers.index("FID before")
    assert headers[fid_before + 1] == "FID after"
    var_real = report["baseline"]["var_real"]
    var_prior = report["baseline"]["var_generated"]
    gaps = {}
    for name, cells in rows.items():
        var_gen = report["methods"][name]["var_generated"]
        gaps[name] = 1 - abs(var_real - var_gen) / abs(var_real - var_prior)
        assert float(cells[1][1]) == var_gen
        assert float(cells[3][1]) == pytest.approx(gaps[name], abs=1e-12)
        assert cells[3][0] == f"{gaps[name]:.1%}"
        assert cells[fid_before][0] == cells[fid_before + 1][0] == "–"  # FID was off
    text = " ".join(page.text)
    assert f"The remedy that closes most of it is temperature: {gaps['temperature']:.0%}" in text
    assert f"keep {var_prior / var_real:.0%} of the real variance" in text
    # The run's page is rewritten with the same table and the corrected samples; the two
    # pages link to each other.
    run_html = (run / "report.html").read_text()
    assert 'href="correct/report.html"' in run_html
    assert 'href="../report.html"' in (folder / "report.html").read_text()
    run_page = parse(run_html)
    assert [row[0][1] for row in run_page.tables["remedies"]] == list(rows)
    assert image_bytes(run_page, "each variance remedy") == (folder / "samples.png").read_bytes()


@pytest.mark.slow  # trains a tiny VAE (module fixture), a few seconds
def test_correct_page_names_the_correct_command_and_the_training_one(
    corrected_run: Path, tmp_path: Path
) -> None:
    run = _copy(corrected_run, tmp_path)
    out = tmp_path / "elsewhere"
    correct(run, "prior,temperature", out, fid="off", progress=False, n_samples=50, seed=4)
    facts = key_facts(render_report(out))
    # The training command is context, labelled so it is not taken for the remedies' command.
    assert facts["training command (equivalent)"].startswith("varloss train ")
    argv = shlex.split(facts["command (equivalent)"])
    assert argv[:2] == ["varloss", "correct"]
    params = cli_params("correct", argv[2:])
    assert params["run_dir"] == str(run) and params["method"] == "prior,temperature"
    assert params["seed"] == 4 and params["n_samples"] == 50 and params["out"] == str(out)
    assert params["fid"] == "off"


def test_correct_report_of_an_older_layout_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "correct"
    folder.mkdir()
    old = {"method": "temperature", "var_real": 0.1, "var_generated": 0.09, "baseline": {}}
    (folder / "report.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match="run `varloss correct` again"):
        render_report(folder)


# ---------------------------------------------------------------------------------------------
# study


@pytest.mark.slow
def test_study_report_tables_fit_and_figure(study: Path) -> None:
    html = render_report(study)
    assert_self_contained(html)
    page = parse(html)
    results = RunFolder(study).read_csv("results.csv")
    # Every column of results.csv, in a closed <details>.
    assert len(page.tables["results-all"]) == len(results) == 2
    assert page.headers["results-all"] == list(results[0])
    mse_column = list(results[0]).index("mse")
    assert [float(r[mse_column][1]) for r in page.tables["results-all"]] == [
        r["mse"] for r in results
    ]
    # The compared numbers: a short label (the runs differ in their latent size), then MSE, both
    # variance losses, their ratio for the reconstructions and FID (off in this study: a dash).
    assert page.headers["results"] == [
        "run",
        "MSE",
        "variance loss, recon\u00adstructed",  # soft hyphens: where narrow columns break
        "variance loss, gener\u00adated",
        "ratio loss / MSE (recon\u00adstructed)",
        "FID",
    ]
    for cells, row in zip(page.tables["results"], results, strict=True):
        assert cells[0] == (f"dense digits z{row['latent']}", row["run_id"])
        assert [float(cell[1]) for cell in cells[1:4]] == [
            row["mse"],
            row["variance_loss_reconstructed"],
            row["variance_loss_generated"],
        ]
        ratio = row["variance_loss_reconstructed"] / row["mse"]
        assert float(cells[4][1]) == pytest.approx(ratio, rel=1e-12)
        assert cells[5] == ("–", None)
    x = np.array([r["mse"] for r in results])
    y = np.array([r["variance_loss_reconstructed"] for r in results])
    slope, _ = np.polyfit(x, y, 1)
    fit_rows = {row[0][0]: row for row in page.tables["fit"]}
    assert float(fit_rows["reconstructed"][1][1]) == pytest.approx(slope, rel=1e-9)
    assert float(fit_rows["origin"][1][1]) == pytest.approx(x @ y / (x @ x), rel=1e-9)
    assert f"variance loss ≈ {fmt(slope, 3)} × MSE" in html
    assert image_bytes(page, "by architecture family") == (study / "figure.png").read_bytes()
    assert sum("samples of run" in i["alt"] for i in page.images) == len(results)
    assert key_facts(html)["command"].startswith("varloss study --preset ")
    assert "QUICK" not in html  # not the quick preset
    assert "Study: variance loss against MSE (tiny)" in html


@pytest.mark.slow
def test_study_maps_one_row_per_run_and_missing_figure(study: Path, tmp_path: Path) -> None:
    folder = _copy(study, tmp_path)
    alt = "per-pixel variance maps of every run in the study"
    both = decode_png(image_bytes_uri(render_report(folder), alt))
    run = next((folder / "runs").iterdir())
    RunFolder(run).unlink(MAPS_FILE)
    RunFolder(folder).unlink("figure.png")
    html = render_report(folder)
    one = decode_png(image_bytes_uri(html, alt))
    assert one.size == (both.size[0], both.size[1] - 145)  # one row of 1.45 in at 100 dpi fewer
    assert "The study folder has no figure.png" in html
    assert not any("by architecture family" in i["alt"] for i in parse(html).images)


def image_bytes_uri(html: str, alt: str) -> str:
    return next(i["src"] for i in parse(html).images if i["alt"] == alt)


# ---------------------------------------------------------------------------------------------
# measure outputs


def test_measure_json_numbers_and_maps(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    real, gen = rng.random((50, 16)), 0.5 * rng.random((40, 16))
    folder = tmp_path / "m"
    folder.mkdir()
    result = varloss.measure(real, generated=gen)
    result.to_json(folder / "numbers.json")
    Image.new("L", (80, 40), 128).save(folder / "maps.png")
    page = parse(write_report(folder).read_text())
    numbers = headline(page)
    assert numbers["variance, real"] == pytest.approx(np.var(real, axis=0).mean(), rel=1e-12)
    assert numbers["variance loss, generated"] == pytest.approx(
        np.var(real, axis=0).mean() - np.var(gen, axis=0).mean(), rel=1e-12
    )
    assert "ratio variance loss / MSE" not in numbers  # no reconstructions, no MSE
    assert [image["alt"] for image in page.images] == ["maps.png"]
    # With maps.npz (flat features, D=16) the maps are drawn, folded into a 4 x 4 picture.
    result.save_maps(folder / "maps.npz")
    page = parse(render_report(folder))
    assert len(page.images) == 1 and "variance maps" in page.images[0]["alt"]


def test_measure_json_file_as_target(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    small, large = rng.random((30, 4)), 2 * rng.random((30, 4))
    varloss.measure(small).to_json(tmp_path / "a.json")
    varloss.measure(large).to_json(tmp_path / "b.json")
    path = write_report(tmp_path / "b.json")
    assert path == tmp_path / "b.html"  # a name of its own: never another page's report.html
    numbers = headline(parse(path.read_text()))
    assert numbers["variance, real"] == pytest.approx(np.var(large, axis=0).mean(), rel=1e-12)


def test_fid_terms_and_prdc_rows(tmp_path: Path) -> None:
    # One-dimensional Gaussians: FID = d² + a + b - 2 sqrt(a b) in closed form.
    d, a, b = 0.3, 2.0, 0.5
    terms = {"mean_term": d**2, "trace_real": a, "trace_generated": b, "cross_term": 2.0}
    fid = {
        "fid": 0.09 + 2.5 - 2.0,
        "terms": terms,
        "trace_ratio": b / a,
        "extractor": {"name": "domain", "weights_hash": "abc"},
        "precision": 0.75,
        "recall": 0.5,
    }
    (tmp_path / "report.json").write_text(json.dumps({"var_real": 0.1, "fid": fid}))
    html = render_report(tmp_path)
    rows = headline(parse(html))
    shown = [rows[f"FID term: {name.replace('_', ' ')}"] for name in terms]
    assert shown[0] + shown[1] + shown[2] - shown[3] == pytest.approx(rows["FID"], rel=1e-12)
    assert rows["FID"] == pytest.approx(d**2 + a + b - 2 * np.sqrt(a * b), rel=1e-12)
    assert rows["feature trace ratio"] == 0.25
    assert rows["precision"] == 0.75 and rows["recall"] == 0.5
    assert "(domain features)" in html
    assert "Fréchet distance between real and generated features is 0.59" in unescape(html)


def _measured_page(tmp_path: Path, real: np.ndarray, reconstructed: np.ndarray) -> tuple:
    """`varloss measure --json` on two arrays, then its page: (JSON, headline rows, page text)."""
    from typer.testing import CliRunner

    folder = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    np.save(folder / "real.npy", real)
    np.save(folder / "reconstructed.npy", reconstructed)
    argv = ["measure", "--real", str(folder / "real.npy"), "--json", str(folder / "m.json")]
    result = CliRunner().invoke(app, [*argv, "--reconstructed", str(folder / "reconstructed.npy")])
    assert result.exit_code == 0, result.output
    page = parse(write_report(folder / "m.json").read_text())
    rows = {row[0][0]: row for row in page.tables["headline"]}
    return json.loads((folder / "m.json").read_text()), rows, unescape(" ".join(page.text))


def test_measure_page_shows_psnr_ssim_and_rfid(tmp_path: Path) -> None:
    """PSNR against numpy, SSIM as measured (negative for inverted images), PSNR infinite for
    exact reconstructions, and a missing rFID said with its reason, in the table and a sentence."""
    real = np.random.default_rng(6).random((12, 1, 16, 16))
    noisy = np.clip(real + np.random.default_rng(7).normal(0, 0.1, real.shape), 0, 1)
    measured, rows, text = _measured_page(tmp_path, real, noisy)
    # measure reads float64 files as they are (the variance numbers and PSNR alike)
    pair = [real, noisy]
    mse = ((pair[0] - pair[1]) ** 2).reshape(12, -1).mean(1)
    psnr = float(np.mean(10 * np.log10(1 / mse)))
    assert float(rows["PSNR, reconstructed (dB)"][1][1]) == pytest.approx(psnr, rel=1e-12)
    assert rows["PSNR, reconstructed (dB)"][1][0] == f"{psnr:.4g}"
    ssim = measured["quality"]["ssim"]
    assert 0 < ssim < 1 and float(rows["SSIM, reconstructed"][1][1]) == ssim
    assert rows["rFID, reconstructed"][1] == ("–", None)
    assert rows["rFID, reconstructed"][2][0] == "none: measured without image features: --fid off"
    assert (
        f"the reconstructions have a PSNR of {psnr:.4g} dB (mean over 12 images), an SSIM of "
        f"{ssim:.4g} (1 for identical images, 0 for unrelated structure) and no rFID (measured "
        "without image features: --fid off)."
    ) in text

    _, rows, text = _measured_page(tmp_path, real, real)  # exact: PSNR infinite, SSIM 1
    assert rows["PSNR, reconstructed (dB)"][1] == ("inf", "inf")
    assert rows["PSNR, reconstructed (dB)"][2][0].endswith(
        "infinite, all 12 images reconstructed exactly, MSE 0"
    )
    assert float(rows["SSIM, reconstructed"][1][1]) == pytest.approx(1.0, abs=1e-12)
    assert "an infinite PSNR (all 12 images reconstructed exactly, MSE 0)" in text

    measured, rows, text = _measured_page(tmp_path, real, 1 - real)  # inverted: SSIM below 0
    ssim = measured["quality"]["ssim"]
    assert ssim < 0 and float(rows["SSIM, reconstructed"][1][1]) == ssim
    below = "below 0: the reconstructions' local structure runs against the real images'"
    assert rows["SSIM, reconstructed"][2][0] == below
    assert f"an SSIM of {ssim:.4g} ({below})" in text


def test_quality_rows_of_a_partial_or_handmade_report() -> None:
    """One exact image of four is left out of the PSNR (a count and a share), an rFID with its
    features, an SSIM the images were too small for, and no rows without a quality dict."""
    from varloss.report.sections import quality_rows, quality_sentence

    quality = {
        "psnr": 31.25,
        "ssim": None,
        "rfid": 0.5,
        "settings": {
            "n": 4,
            "psnr_exact_images_left_out": 1,
            "ssim": "images smaller than the SSIM window of 11 pixels",
            "rfid_extractor": {"name": "domain:digits:small"},
        },
    }
    rows = {row[0].text: row for row in quality_rows(quality)}
    assert rows["PSNR, reconstructed (dB)"][1].value == 31.25
    assert rows["PSNR, reconstructed (dB)"][2].text.endswith(
        "1 image (25% of 4 images) reconstructed exactly was left out (infinite PSNR)"
    )
    assert rows["SSIM, reconstructed"][1].text == "–"
    assert rows["rFID, reconstructed"][1].value == 0.5
    assert "(domain:digits:small features)" in rows["rFID, reconstructed"][2].text
    assert quality_sentence(quality) == (
        "As autoencoder papers report them, the reconstructions have a PSNR of 31.25 dB (1 image "
        "(25% of 4 images) reconstructed exactly was left out (infinite PSNR)), no SSIM (images "
        "smaller than the SSIM window of 11 pixels) and an rFID of 0.5 on domain:digits:small "
        "features (lower is better)."
    )
    single = {"psnr": float("inf"), "ssim": -0.25, "rfid": None}
    single["settings"] = {"n": 1, "rfid_extractor": {"name": "inception"}}
    assert [row[1].value for row in quality_rows(single)] == [float("inf"), -0.25, None]
    assert "no rFID (fewer than 2 images: no covariance)" in quality_sentence(single)
    assert quality_rows(None) == [] and quality_rows([1, 2]) == []


def test_explain_variance_branches() -> None:
    small = explain_variance(
        {"var_real": 0.1, "var_reconstructed": 0.06, "mse": 0.04, "bias2": 0.001, "cov_term": 0.0}
    )
    assert small[0].startswith("The reconstructions keep 60%")
    assert "1.00 times the reconstruction MSE" in small[0]
    assert "essentially the reconstruction error" in small[1]
    large = explain_variance(
        {"var_real": 0.1, "var_reconstructed": 0.05, "mse": 0.02, "bias2": 0.001, "cov_term": 0.031}
    )
    assert "the variance loss lies 0.03 above the reconstruction error (0.02)" in large[1]
    generated = explain_variance({"var_real": 0.1, "var_generated": 0.07})
    assert generated == [
        "Generated samples keep 70% of the real variance (0.07 of 0.1): a variance loss of 0.03. "
        "Samples with less variance than the data look blurry and alike."
    ]
    assert explain_variance({"var_generated": 0.07}) == []


# ---------------------------------------------------------------------------------------------
# bad input and the registry


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: tmp, "holds no varloss output"),
        (lambda tmp: _write(tmp / "notes.txt", b"hello"), "is not a `varloss measure --json`"),
        (lambda tmp: _write(tmp / "blob.bin", bytes(range(256))), "is not a `varloss measure"),
        (lambda tmp: _write(tmp / "x" / "report.json", b"{not json"), "not valid JSON"),
        (lambda tmp: _write(tmp / "x" / "report.json", b"[1, 2]"), "must hold a JSON object"),
    ],
)
def test_bad_targets_raise_one_sentence_and_write_nothing(tmp_path, make, message) -> None:
    target = make(tmp_path)
    if target.name == "report.json":
        (target.parent / "config.json").write_text("{}")  # looks like a train run
        target = target.parent
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(InputError, match=message) as caught:
        write_report(target)
    assert "\n" not in str(caught.value) and str(caught.value).endswith(".")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_report_kind_registry_refuses_a_second_kind_of_one_name() -> None:
    kind = ReportKind("train", "twice", detects=lambda folder: False, build=lambda f, s: {})
    with pytest.raises(InputError, match="report kind 'train' is already registered"):
        register_report_kind(kind)
    assert register_report_kind(REPORT_KINDS["train"]) is REPORT_KINDS["train"]  # a no-op


@pytest.mark.slow  # trains a tiny VAE (module fixture), a few seconds
def test_cli_report(train_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    run = _copy(train_run, tmp_path)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(run / "report.html")
    assert "varloss report" in (run / "report.html").read_text()


def test_cli_report_on_a_file_exits_2_without_traceback(tmp_path: Path) -> None:
    target = _write(tmp_path / "notes.txt", b"not a report")
    result = subprocess.run(
        [sys.executable, "-c", "from varloss.cli import run; run()", "report", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "is not a `varloss measure --json` file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists()
