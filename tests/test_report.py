"""The HTML report: kind detection, the numbers on the page against numpy, sections that appear
only when their data exists, self-containment, and clean failures on bad folders.

The folders are built here the way `varloss train`, `varloss correct` and `varloss study` lay
them out (numbers computed with numpy), so these tests do not depend on training anything.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from varloss.errors import InputError
from varloss.report import (
    detect_kind,
    explain_variance,
    fmt,
    render_report,
    save_maps,
    write_report,
)

# ---------------------------------------------------------------------------------------------
# folders as the producers write them


def _measure_numbers(real: np.ndarray, rec: np.ndarray | None, gen: np.ndarray | None) -> dict:
    """The `varloss measure` keys, computed directly with numpy (population variances)."""
    out: dict[str, Any] = {"n_real": len(real), "dims": list(real.shape[1:])}
    out["var_real"] = float(np.mean(np.var(real, axis=0)))
    if rec is not None:
        error = real - rec
        out.update(
            n_reconstructed=len(rec),
            var_reconstructed=float(np.mean(np.var(rec, axis=0))),
            mse=float(np.mean(error**2)),
            bias2=float(np.mean(np.mean(error, axis=0) ** 2)),
            cov_term=float(
                2 * np.mean(np.mean((rec - rec.mean(0)) * (error - error.mean(0)), axis=0))
            ),
        )
        out["variance_loss_reconstructed"] = out["var_real"] - out["var_reconstructed"]
    if gen is not None:
        out.update(n_generated=len(gen), var_generated=float(np.mean(np.var(gen, axis=0))))
        out["variance_loss_generated"] = out["var_real"] - out["var_generated"]
    return out


def _grid_png(path: Path, rows: int = 3, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((rows * 10, 80)) * 255).astype(np.uint8)
    Image.fromarray(pixels).resize((320, rows * 40), Image.NEAREST).save(path)


def make_train_run(
    path: Path, *, with_correct: bool = False, with_maps: bool = True, channels: int = 1
) -> tuple[Path, dict[str, Any]]:
    """A finished `varloss train` run folder; returns it and the arrays behind its numbers."""
    rng = np.random.default_rng(7)
    real = rng.random((300, channels, 8, 8))
    rec = 0.6 * real + 0.2 + 0.05 * rng.standard_normal(real.shape)
    gen = 0.25 * rng.random((200, channels, 8, 8)) + 0.35
    numbers = _measure_numbers(real, rec, gen)
    settings = {
        "dataset": "digits",
        "split": "test",
        "seed": 3,
        "device": "cpu",
        "command": "varloss train --model dense --dataset digits --epochs 3 --seed 3",
        "versions": {"torch": "2.13.0", "numpy": np.__version__},
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "report.json").write_text(json.dumps({**numbers, "settings": settings}))
    config = {
        "family": "dense",
        "model": {"family": "dense", "image_shape": [channels, 8, 8], "latent_dim": 4},
        "train": {"family": "dense", "dataset": "digits", "epochs": 3, "seed": 3, "latent": 4},
    }
    (path / "config.json").write_text(json.dumps(config))
    if with_maps:
        save_maps(
            {
                "var_real": real.var(0),
                "var_reconstructed": rec.var(0),
                "var_generated": gen.var(0),
            },
            path / "maps.npz",
        )
    _grid_png(path / "samples.png")
    with (path / "history.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "loss", "reconstruction", "kl", "mse", "seconds"])
        for epoch in range(1, 4):
            writer.writerow([epoch, 40 / epoch, 35 / epoch, 5.0, 0.05 / epoch, 1.25])
    if with_correct:
        make_correct(path / "correct", run_dir=path)
    return path, {"real": real, "rec": rec, "gen": gen, **numbers}


CORRECT_METHODS = {
    # name: (var_generated, fid_after)
    "prior": (0.040, 30.0),
    "two-stage": (0.070, 21.5),
    "temperature": (0.095, 26.0),
    "match": (0.080, 24.0),
}


def make_correct(path: Path, run_dir: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """A `varloss correct --method all` folder with gap closed computed from its definition."""
    var_real = 0.08
    base_var, base_fid = CORRECT_METHODS["prior"]
    methods = {}
    for name, (var_gen, fid_after) in CORRECT_METHODS.items():
        methods[name] = {
            "var_real": var_real,
            "var_generated": var_gen,
            "variance_loss_generated": var_real - var_gen,
            "gap_closed": 1 - abs(var_real - var_gen) / abs(var_real - base_var),
            "fid": {"fid": fid_after},
            "fid_before": base_fid,
            "fid_after": fid_after,
            "fid_gain": base_fid - fid_after,
        }
    report = {
        "method": "all",
        "baseline": methods["prior"],
        "methods": methods,
        "settings": {
            "run_dir": str(run_dir or path.parent),
            "dataset": "digits",
            "seed": 0,
            "model_family": "dense",
        },
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "report.json").write_text(json.dumps(report))
    _grid_png(path / "samples.png", rows=4, seed=1)
    return path, report


FAMILIES = ("dense", "conv", "resnet", "draw")


def make_study(
    path: Path,
    *,
    with_figure: bool = True,
    preset: str = "quick",
    n: int = 8,
    with_maps: bool = True,
) -> tuple[Path, list[dict[str, Any]]]:
    """A `varloss study` folder: results.csv, fit.json (numpy least squares), runs/*/samples.png
    and runs/*/maps.npz."""
    rng = np.random.default_rng(11)
    rows = []
    for index in range(n):
        mse = 0.01 + 0.004 * index + 0.001 * rng.random()
        loss_rec = 0.97 * mse + 0.0005 * rng.standard_normal()
        rows.append(
            {
                "run_id": f"{FAMILIES[index % 4]}-mnist-{index}",
                "family": FAMILIES[index % 4],
                "dataset": "mnist",
                "latent": 16,
                "epochs": 2,
                "loss": "bernoulli",
                "seed": index,
                "mse": mse,
                "var_real": 0.1,
                "var_reconstructed": 0.1 - loss_rec,
                "var_generated": 0.1 - 1.3 * mse,
                "variance_loss_reconstructed": loss_rec,
                "variance_loss_generated": 1.3 * mse,
                "bias2": 1e-4,
                "cov_term": loss_rec - mse + 1e-4,
                "train_seconds": 10.0 + index,
            }
        )
    path.mkdir(parents=True, exist_ok=True)
    with (path / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    x = np.array([r["mse"] for r in rows])
    y = np.array([r["variance_loss_reconstructed"] for r in rows])
    slope, intercept = np.polyfit(x, y, 1)
    r2 = 1 - np.sum((y - (slope * x + intercept)) ** 2) / np.sum((y - y.mean()) ** 2)
    fit = {
        "preset": preset,
        "reconstructed": {"slope": slope, "intercept": intercept, "r2": r2, "n": n},
        "origin": {"slope": float(x @ y / (x @ x)), "n": n},
    }
    (path / "fit.json").write_text(json.dumps(fit))
    for row in rows:
        run = path / "runs" / row["run_id"]
        run.mkdir(parents=True, exist_ok=True)
        _grid_png(run / "samples.png", seed=row["seed"])
        if with_maps:
            real = 0.1 + 0.1 * rng.random((1, 8, 8))
            save_maps(
                {
                    "var_real": real,
                    "var_reconstructed": real * (1 - 0.1 * row["seed"] / n),
                    "var_generated": real * 0.5,
                },
                run / "maps.npz",
            )
    if with_figure:
        _grid_png(path / "figure.png", rows=6, seed=99)
    return path, rows


# ---------------------------------------------------------------------------------------------
# reading the page back


class _Page(HTMLParser):
    """Tables by id (cells with text and data-value), <img> sources, notices, all text."""

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


def _decode_png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    image.load()
    return image


def _assert_self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "url(http" not in html and "@import" not in html
    assert '<meta name="viewport"' in html


# ---------------------------------------------------------------------------------------------
# tests


def test_detect_kind_of_each_output(tmp_path: Path) -> None:
    run, _ = make_train_run(tmp_path / "run", with_correct=True)
    study, _ = make_study(tmp_path / "study")
    measure = tmp_path / "measure"
    measure.mkdir()
    (measure / "numbers.json").write_text(json.dumps({"var_real": 0.1, "var_generated": 0.05}))
    assert detect_kind(run) == "train"
    assert detect_kind(run / "correct") == "correct"
    assert detect_kind(study) == "study"
    assert detect_kind(measure) == "measure"


def test_train_report_numbers_match_numpy(tmp_path: Path) -> None:
    run, ref = make_train_run(tmp_path / "run")
    path = write_report(run, command="varloss report RUN")
    assert path == run / "report.html"
    html = path.read_text()
    _assert_self_contained(html)
    page = parse(html)
    numbers = headline(page)
    real, rec, gen = ref["real"], ref["rec"], ref["gen"]
    var_real = np.var(real, axis=0).mean()
    var_rec = np.var(rec, axis=0).mean()
    mse = np.mean((real - rec) ** 2)
    assert numbers["variance, real"] == pytest.approx(var_real, rel=1e-12)
    assert numbers["variance, generated"] == pytest.approx(np.var(gen, axis=0).mean(), rel=1e-12)
    assert numbers["ratio variance loss / MSE"] == pytest.approx((var_real - var_rec) / mse, 1e-12)
    # The identity row is computed by the page from mse, bias² and cov; numpy gives the loss.
    assert numbers["MSE - bias² + covariance term"] == pytest.approx(var_real - var_rec, rel=1e-9)
    assert numbers["images, generated"] == 200
    # The shown text is the 4-significant-digit rendering of the same value.
    row = next(r for r in page.tables["headline"] if r[0][0] == "MSE")
    assert row[1][0] == f"{mse:.4g}"
    text = " ".join(page.text)
    assert f"keep {var_rec / var_real:.0%} of the real images' per-pixel variance" in text
    assert f"{(var_real - var_rec) / mse:.2f} times the reconstruction MSE" in text
    # maps (from maps.npz), training curves, samples; all decodable PNG data URIs.
    alts = [image["alt"] for image in page.images]
    assert any("variance maps" in alt for alt in alts)
    assert any("loss and MSE per epoch" in alt for alt in alts)
    assert any("grid of real, reconstructed and generated" in alt for alt in alts)
    sizes = [_decode_png(image["src"]).size for image in page.images]
    assert all(w > 100 and h > 50 for w, h in sizes)
    samples = next(
        i for i in page.images if "grid of real, reconstructed and generated" in i["alt"]
    )
    assert base64.b64decode(samples["src"].split(",", 1)[1]) == (run / "samples.png").read_bytes()
    # settings: the recorded command, seed and data set; the rendering command and versions.
    assert "varloss train --model dense --dataset digits --epochs 3 --seed 3" in text
    assert "varloss report RUN" in text
    assert "remedies" not in page.tables  # no correct/ folder, no remedies section


def test_train_report_without_maps_says_why(tmp_path: Path) -> None:
    run, _ = make_train_run(tmp_path / "run", with_maps=False)
    html = render_report(run, recompute_maps=True)  # no model.safetensors: cannot recompute
    page = parse(html)
    assert not any("variance maps" in image["alt"] for image in page.images)
    assert "saved no maps.npz and no model to recompute them" in html
    assert len(page.images) == 2  # curves and samples are still there


def test_multichannel_maps_are_folded(tmp_path: Path) -> None:
    run, _ = make_train_run(tmp_path / "run", channels=3)
    html = render_report(run)
    assert "mean over 3 channels" in html


def test_correct_table_gap_closed_and_fid(tmp_path: Path) -> None:
    run, _ = make_train_run(tmp_path / "run")
    folder, report = make_correct(run / "correct", run_dir=run)
    page = parse(write_report(folder).read_text())
    rows = {row[0][1]: row for row in page.tables["remedies"]}
    assert list(rows) == list(CORRECT_METHODS)
    assert page.headers["remedies"][3:6] == ["gap closed", "FID before", "FID after"]
    base_var = CORRECT_METHODS["prior"][0]
    for name, (var_gen, fid_after) in CORRECT_METHODS.items():
        gap = 1 - abs(0.08 - var_gen) / abs(0.08 - base_var)
        cells = rows[name]
        assert float(cells[1][1]) == pytest.approx(var_gen)
        assert float(cells[3][1]) == pytest.approx(gap, abs=1e-12)
        assert cells[3][0] == f"{gap:.1%}"
        assert float(cells[4][1]) == 30.0 and float(cells[5][1]) == fid_after
        assert float(cells[6][1]) == pytest.approx(30.0 - fid_after)
    text = " ".join(page.text)
    # temperature overshoots (0.095): |0.08-0.095|/0.04 leaves 62.5% closed; two-stage closes 75%.
    assert "The remedy that closes most of it is two-stage: 75% of the gap" in text
    assert "FID going from 30 to 21.5" in text
    assert "keep 50% of the real variance" in text
    # The run's page is rewritten with the same table and the corrected samples; the two
    # pages link to each other.
    run_html = (run / "report.html").read_text()
    assert 'href="correct/report.html"' in run_html
    assert 'href="../report.html"' in (folder / "report.html").read_text()
    run_page = parse(run_html)
    assert [row[0][1] for row in run_page.tables["remedies"]] == list(CORRECT_METHODS)
    assert any("each variance remedy" in image["alt"] for image in run_page.images)


def test_correct_single_method_layout(tmp_path: Path) -> None:
    folder = tmp_path / "correct"
    folder.mkdir()
    baseline = {"var_real": 0.1, "var_generated": 0.05, "gap_closed": 0.0, "fid": None}
    report = {
        "method": "temperature",
        "var_real": 0.1,
        "var_generated": 0.09,
        "gap_closed": 0.8,
        "baseline": baseline,
        "settings": {"dataset": "digits", "seed": 1},
    }
    (folder / "report.json").write_text(json.dumps(report))
    page = parse(render_report(folder))
    names = [row[0][1] for row in page.tables["remedies"]]
    assert names == ["prior", "temperature"]
    assert float(page.tables["remedies"][1][3][1]) == pytest.approx(0.8)
    assert page.tables["remedies"][1][4][0] == "–"  # no FID recorded


def test_study_report_tables_fit_and_quick_notice(tmp_path: Path) -> None:
    study, rows = make_study(tmp_path / "study")
    html = write_report(study).read_text()
    _assert_self_contained(html)
    page = parse(html)
    assert "QUICK version of the study" in html
    results = page.tables["results"]
    assert len(results) == len(rows)
    assert page.headers["results"] == list(rows[0])
    mse_column = list(rows[0]).index("mse")
    assert [float(r[mse_column][1]) for r in results] == [r["mse"] for r in rows]
    x = np.array([r["mse"] for r in rows])
    y = np.array([r["variance_loss_reconstructed"] for r in rows])
    slope, intercept = np.polyfit(x, y, 1)
    fit_rows = {row[0][0]: row for row in page.tables["fit"]}
    assert float(fit_rows["reconstructed"][1][1]) == pytest.approx(slope, rel=1e-12)
    assert float(fit_rows["origin"][1][1]) == pytest.approx(x @ y / (x @ x), rel=1e-12)
    assert f"variance loss ≈ {fmt(slope, 3)} × MSE" in html
    # figure.png from the study is embedded byte for byte; one sample grid per run.
    figure = next(i for i in page.images if "by architecture family" in i["alt"])
    assert base64.b64decode(figure["src"].split(",", 1)[1]) == (study / "figure.png").read_bytes()
    assert sum("samples of run" in i["alt"] for i in page.images) == len(rows)
    assert 'class="sortable"' in html
    # The study recorded no command: the page gives the one that re-runs it (CLI-parsed here).
    import shlex

    import typer

    from varloss.cli import app

    facts = dict(re.findall(r'<th scope="row">([^<]*)</th><td><code>([^<]*)</code>', html))
    argv = shlex.split(unescape(facts["command (equivalent)"]))
    command = typer.main.get_command(app).commands["study"]
    params = command.make_context("study", argv[2:]).params
    assert argv[:2] == ["varloss", "study"]
    assert params["preset"] == "quick" and params["out"] == str(study)


def test_study_without_figure_draws_the_scatter(tmp_path: Path) -> None:
    study, _ = make_study(tmp_path / "study", with_figure=False, preset="paper")
    page = parse(render_report(study))
    scatter = next(i for i in page.images if "by architecture family" in i["alt"])
    # The study's own two-panel figure (varloss.study.plot_study), drawn from results.csv.
    from PIL import Image

    from varloss.study import plot_study

    with (study / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    direct = plot_study(rows, json.loads((study / "fit.json").read_text()), tmp_path / "f.png")
    assert _decode_png(scatter["src"]).size == Image.open(direct).size
    assert "QUICK" not in " ".join(page.text)


def test_measure_json_with_maps_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    real, gen = rng.random((50, 16)), 0.5 * rng.random((40, 16))
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "numbers.json").write_text(json.dumps(_measure_numbers(real, None, gen)))
    _grid_png(folder / "maps.png")
    page = parse(write_report(folder).read_text())
    numbers = headline(page)
    assert numbers["variance, real"] == pytest.approx(np.var(real, axis=0).mean(), rel=1e-12)
    assert numbers["variance loss, generated"] == pytest.approx(
        np.var(real, axis=0).mean() - np.var(gen, axis=0).mean(), rel=1e-12
    )
    assert "ratio variance loss / MSE" not in numbers  # no reconstructions, no MSE
    assert [image["alt"] for image in page.images] == ["maps.png"]
    # maps.npz of flat features (D=16) is folded into a 4 x 4 picture.
    save_maps({"var_real": real.var(0), "var_generated": gen.var(0)}, folder / "maps.npz")
    page = parse(render_report(folder))
    assert len(page.images) == 1 and "variance maps" in page.images[0]["alt"]


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
    assert "differs from the reconstruction error by 0.03" in large[1]
    generated = explain_variance({"var_real": 0.1, "var_generated": 0.07})
    assert generated == [
        "Generated samples keep 70% of the real variance (0.07): a variance loss of 0.03. "
        "Samples with less variance than the data look blurry and alike."
    ]


def test_bad_folders_raise_input_error_and_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        write_report(tmp_path / "missing")
    with pytest.raises(InputError, match="holds no varloss output"):
        write_report(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "report.json").write_text("{not json")
    with pytest.raises(InputError, match="is not valid JSON"):
        write_report(broken)
    assert sorted(p.name for p in broken.iterdir()) == ["report.json"]


def test_cli_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from varloss.cli import app

    run, _ = make_train_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["report", str(run), "--no-recompute-maps"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(run / "report.html")
    assert "varloss report" in (run / "report.html").read_text()


def test_cli_report_bad_folder_exits_2_without_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "from varloss.cli import run; run()", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: report folder")
    assert not (tmp_path / "report.html").exists()


def test_fid_terms_and_prdc_rows(tmp_path: Path) -> None:
    # One-dimensional Gaussians: FID = d² + a + b - 2 sqrt(a b) in closed form.
    d, a, b = 0.3, 2.0, 0.5
    terms = {
        "mean_term": d**2,
        "trace_real": a,
        "trace_generated": b,
        "cross_term": 2 * np.sqrt(a * b),
    }
    fid = {
        "fid": d**2 + a + b - 2 * np.sqrt(a * b),
        "terms": terms,
        "trace_ratio": b / a,
        "extractor": {"name": "domain", "weights_hash": "abc"},
        "precision": 0.75,
        "recall": 0.5,
    }
    folder = tmp_path / "m"
    folder.mkdir()
    numbers = {"var_real": 0.1, "var_generated": 0.04, "fid": fid}
    (folder / "report.json").write_text(json.dumps(numbers))
    page = parse(render_report(folder))
    rows = headline(page)
    assert rows["FID"] == pytest.approx(0.09 + 2.5 - 2.0, rel=1e-12)
    shown_terms = [rows[f"FID term: {name.replace('_', ' ')}"] for name in terms]
    assert shown_terms[0] + shown_terms[1] + shown_terms[2] - shown_terms[3] == pytest.approx(
        rows["FID"], rel=1e-12
    )
    assert rows["feature trace ratio"] == 0.25
    assert rows["precision"] == 0.75 and rows["recall"] == 0.5
    assert "(domain features)" in render_report(folder)
    assert "Fréchet distance between real and generated features is 0.59" in " ".join(page.text)


def test_train_maps_recomputed_from_the_saved_model(tmp_path: Path) -> None:
    pytest.importorskip("varloss.measure")
    import torch

    from varloss import data
    from varloss.models import create_model, save_model

    torch.manual_seed(0)
    model = create_model("dense", (1, 8, 8), 4)
    run = tmp_path / "run"
    save_model(model, run, extra={"train": {"family": "dense", "dataset": "digits", "seed": 5}})
    test = data.load("digits", "test").images.numpy().astype(np.float64)
    with torch.no_grad():
        rec = model.reconstruct(torch.from_numpy(test).float()).numpy().astype(np.float64)
    numbers = _measure_numbers(test, rec, None)
    (run / "report.json").write_text(json.dumps(numbers))
    html = render_report(run)
    assert "Recomputed from the saved model on the test split" in html
    # the recomputed real variance matches report.json, so no mismatch note
    assert "the recomputed real variance" not in html
    page = parse(html)
    maps = next(i for i in page.images if "variance maps" in i["alt"])
    assert _decode_png(maps["src"]).size[0] > 600
    assert render_report(run, recompute_maps=False).count("variance maps of real") == 0


def test_measure_json_file_as_target(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"var_real": 0.2, "var_generated": 0.1}))
    (tmp_path / "b.json").write_text(json.dumps({"var_real": 0.4, "var_generated": 0.3}))
    path = write_report(tmp_path / "b.json")
    assert path == tmp_path / "report.html"
    numbers = headline(parse(path.read_text()))
    assert numbers["variance, real"] == 0.4
    assert numbers["variance loss, generated"] == pytest.approx(0.1, rel=1e-12)
    (tmp_path / "c.json").write_text(json.dumps({"something": 1}))
    with pytest.raises(InputError, match="is not a `varloss measure --json` file"):
        write_report(tmp_path / "c.json")


def test_equivalent_train_command_parses_back_to_the_recorded_config(tmp_path: Path) -> None:
    import shlex

    import typer

    from varloss.cli import app

    run, _ = make_train_run(tmp_path / "run")
    report = json.loads((run / "report.json").read_text())
    del report["settings"]["command"]
    (run / "report.json").write_text(json.dumps(report))
    train = {
        "family": "conv",
        "dataset": "fashion-mnist",
        "epochs": 4,
        "latent": 8,
        "seed": 11,
        "out": str(run),
        "loss": None,
        "limit": 500,
        "batch_size": 64,
        "lr": 0.0005,
        "schedule": "cosine",
        "device": "auto",
        "compile": False,
        "bf16": True,
        "hyper": {"width": 16, "hidden_sizes": [32, 16]},
        "data_path": None,
        "eval_limit": None,
    }
    config = json.loads((run / "config.json").read_text())
    config["train"] = train
    (run / "config.json").write_text(json.dumps(config))
    page = render_report(run, recompute_maps=False)
    found = re.search(r'<th scope="row">command \(equivalent\)</th><td><code>(.*?)</code>', page)
    assert found, "the page shows no equivalent command"
    argv = shlex.split(unescape(found.group(1)))
    assert argv[:2] == ["varloss", "train"]
    # Parse with the real CLI (no training): every option exists and maps back to the config.
    command = typer.main.get_command(app).commands["train"]
    params = command.make_context("train", argv[2:]).params
    expected = {"model": "conv", "dataset": "fashion-mnist", "epochs": 4, "latent": 8, "seed": 11}
    assert {k: params[k] for k in expected} == expected
    assert params["out"] == str(run) and params["limit"] == 500 and params["batch_size"] == 64
    assert params["lr"] == 0.0005 and params["schedule"] == "cosine" and params["bf16"] is True
    assert params["loss"] is None and params["compile_model"] is False
    assert sorted(params["hyper"]) == ["hidden_sizes=[32, 16]", "width=16"]


def test_correct_page_names_the_correct_command_and_the_training_one(tmp_path: Path) -> None:
    import shlex

    import typer

    from varloss.cli import app

    run, _ = make_train_run(tmp_path / "run")
    folder, report = make_correct(tmp_path / "elsewhere", run_dir=run)
    report["settings"].update(
        methods=["prior", "two-stage", "match"],
        seed=4,
        train_limit=700,
        n_test=300,
        n_generated=120,
        fid_features=None,
    )
    (folder / "report.json").write_text(json.dumps(report))
    page = render_report(folder)
    rows = dict(re.findall(r'<th scope="row">([^<]*)</th><td><code>([^<]*)</code>', page))
    # The training command is context, labelled so it is not taken for the remedies' command.
    assert rows["training command (equivalent)"].startswith("varloss train --model dense ")
    assert rows["command (equivalent)"].startswith("varloss correct ")
    argv = shlex.split(unescape(rows["command (equivalent)"]))
    command = typer.main.get_command(app).commands["correct"]
    params = command.make_context("correct", argv[2:]).params
    assert params["run_dir"] == str(run) and params["method"] == "prior,two-stage,match"
    assert params["seed"] == 4 and params["limit"] == 700 and params["n_samples"] == 120
    assert params["fid"] is False and params["out"] == str(folder)


def test_study_maps_one_row_per_run_with_maps(tmp_path: Path) -> None:
    study, rows = make_study(tmp_path / "study")
    alt = "per-pixel variance maps of every run in the study"
    maps = [i for i in parse(render_report(study)).images if i["alt"] == alt]
    assert len(maps) == 1
    full = _decode_png(maps[0]["src"])
    # Three runs lose their maps: the figure is three rows (1.45 in at 100 dpi each) shorter.
    for row in rows[:3]:
        (study / "runs" / row["run_id"] / "maps.npz").unlink()
    fewer = next(
        _decode_png(i["src"]) for i in parse(render_report(study)).images if i["alt"] == alt
    )
    assert fewer.size == (full.size[0], full.size[1] - 3 * 145)
    bare, _ = make_study(tmp_path / "bare", with_maps=False)
    html = render_report(bare)
    assert "per-pixel variance maps of every run" not in html and 'href="#maps"' not in html
