"""A decoder whose outputs do not vary across inputs is reported with a warning: in the report's
JSON, under `varloss measure`'s table, in `varloss correct`'s methods table and on the pages'
sentences; a model that varies gets none; real images that do not vary are said to compare
nothing. The threshold (1e-8 of the real variance) is checked on both sides with numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from varloss.cli import app
from varloss.cli.correct import print_methods
from varloss.data import load
from varloss.report import explain_variance
from varloss.report.pages.correct import remedies_section
from varloss.variance import measure, measure_model
from varloss.variance.report import CONSTANT_OUTPUT_FRACTION, variance_warnings


def digits() -> np.ndarray:
    return load("digits", "test").images.numpy()[:200].astype(np.float64)


def numpy_variance(images: np.ndarray) -> float:
    return float(images.reshape(images.shape[0], -1).var(0).mean())


def test_a_constant_decoder_is_warned_about_and_a_varying_one_is_not():
    real = torch.from_numpy(digits()).float()
    constant = torch.full((1, 1, 8, 8), 0.3)
    report = measure_model(
        None,
        real,
        reconstruct=lambda x: constant.expand(x.shape[0], -1, -1, -1),
        generate=lambda n: constant.expand(n, -1, -1, -1),
        n_generated=50,
    )
    assert report.var_reconstructed == 0 and report.var_generated == 0
    warnings = report.to_dict()["warnings"]
    assert [text.split(" images")[0] for text in warnings] == ["reconstructed", "generated"]
    assert "do not vary across inputs" in warnings[0] and "below 1e-8 of" in warnings[0]
    assert f"{numpy_variance(real.numpy()):.6g}" in warnings[0]  # the real variance, by numpy
    noisy = measure(real, real + 0.05 * torch.randn_like(real), real.flip(0))
    assert noisy.warnings == [] and noisy.to_dict()["warnings"] == []


@pytest.mark.parametrize(("scale", "warned"), [(0.9e-4, True), (1.1e-4, False)])
def test_the_threshold_is_one_hundred_millionth_of_the_real_variance(scale, warned):
    """Generated = the real images times `scale`: their variance is scale² of the real one."""
    real = digits()
    generated = real * scale
    ratio = numpy_variance(generated) / numpy_variance(real)
    assert (ratio < CONSTANT_OUTPUT_FRACTION) is warned  # the numbers straddle the threshold
    report = measure(real, None, generated)
    assert report.var_generated / report.var_real == pytest.approx(ratio, rel=1e-9)
    assert bool(report.warnings) is warned


def test_real_images_that_do_not_vary_get_their_own_warning():
    real = np.full((10, 1, 4, 4), 0.5)
    report = measure(real, real, np.random.default_rng(0).random((10, 1, 4, 4)))
    assert report.var_real == 0 and report.ratio_reconstructed is None
    (warning,) = report.warnings  # one warning, not one per set besides
    assert warning.startswith("real images do not vary (variance 0)")
    assert variance_warnings({"var_real": None, "var_generated": 0.0}) == []
    assert variance_warnings({"var_real": float("nan")}) == []
    assert variance_warnings({"var_real": 0.1}) == []  # nothing else measured: nothing to say
    sentences = explain_variance(report.to_dict())
    assert sentences[0] == f"Warning: {warning}."


def test_measure_prints_and_writes_the_warning(tmp_path):
    real = digits()
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "flat.npy", np.full_like(real, 0.25))
    np.save(tmp_path / "noisy.npy", real + np.random.default_rng(1).normal(0, 0.05, real.shape))
    runner = CliRunner()
    for name, warned in (("flat", True), ("noisy", False)):
        result = runner.invoke(
            app,
            ["measure", "--real", str(tmp_path / "real.npy"), "--reconstructed",
             str(tmp_path / f"{name}.npy"), "--json", str(tmp_path / f"{name}.json")],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        output = " ".join(result.output.split())  # the table wraps long lines
        saved = json.loads((tmp_path / f"{name}.json").read_text())
        assert ("warning: reconstructed images do not vary" in output) is warned, output
        assert bool(saved["warnings"]) is warned
        if warned:
            assert saved["warnings"] == variance_warnings(saved)


def test_correct_prints_each_method_s_warning(capsys):
    rows = {
        "prior": {"var_real": 0.05, "var_generated": 1e-12, "gap_closed": None},
        "match": {"var_real": 0.05, "var_generated": 0.049, "gap_closed": 0.98},
    }
    print_methods({"settings": {"run_dir": "run"}, "methods": rows, "baseline": rows["prior"]})
    output = " ".join(capsys.readouterr().out.split())
    assert "warning (prior): generated images do not vary across inputs" in output
    assert "warning (match)" not in output
    report = {"baseline": rows["prior"], "methods": rows}
    (note,) = remedies_section(report, Path("report.json"))["notes"]
    assert note.startswith("Warning (prior): generated images do not vary across inputs")


def test_a_collapsed_pythae_model_is_measured_with_a_warning(tmp_path):
    """A pythae VAMP whose decoder ignores its code (its last layer's weights at zero):
    `varloss measure --model pythae:...` warns in the table and the JSON."""
    pythae_models = pytest.importorskip("pythae.models")
    torch.manual_seed(0)
    config = pythae_models.VAMPConfig(input_dim=(1, 8, 8), latent_dim=2, number_components=5)
    model = pythae_models.VAMP(config)
    last = [module for module in model.decoder.modules() if isinstance(module, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
    model.save(str(tmp_path / "vamp"))
    np.save(tmp_path / "real.npy", digits())
    result = CliRunner().invoke(
        app,
        ["measure", "--model", f"pythae:{tmp_path / 'vamp'}", "--real",
         str(tmp_path / "real.npy"), "--json", str(tmp_path / "report.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["var_reconstructed"] < 1e-12 and saved["var_generated"] < 1e-12
    assert [text.split(" images")[0] for text in saved["warnings"]] == [
        "reconstructed",
        "generated",
    ]
    output = " ".join(result.output.split())
    assert "warning: reconstructed images do not vary" in output
    assert "warning: generated images do not vary" in output
