"""`correct`'s honest gap metrics and the price of the image-space remedies, checked against
independent recomputations (numpy, scipy) from the saved samplers; the gap arithmetic with
numbers of every sign (overshoot, a band made worse, no variance at all)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from _digits_vae import untrained_vae

from varloss.data import load
from varloss.models import save_model
from varloss.pipelines.correct import correct
from varloss.runs import RunFolder
from varloss.samplers import load_sampler
from varloss.variance.gap import band_gap_closed, spectral_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARAMS = {
    "temperature": {"n_fit": 200, "scan_points": 6},
    "ot": {"n_fit": 400, "components": 12},
    "spectral": {"n_fit": 400},
}


def _band(real, generated):
    return {"var_real": real, "var_generated": generated}


def test_band_gap_closed_is_signed_per_band():
    baseline = {"bands": [_band(1.0, 0.5), _band(0.4, 0.1), _band(0.2, 0.2)]}
    remedy = {"bands": [_band(1.0, 1.25), _band(0.4, 0.0), _band(0.2, 0.3)]}
    # overshoot shows above 1, a band made worse below 0, a band without gap has no fraction
    assert band_gap_closed(remedy, baseline) == [pytest.approx(1.5), pytest.approx(-1 / 3), None]
    assert band_gap_closed(baseline, baseline) == [0.0, 0.0, None]
    assert band_gap_closed(None, baseline) is None
    assert band_gap_closed({"bands": remedy["bands"][:2]}, baseline) is None


def test_spectral_error_is_the_mean_absolute_log_ratio():
    doubled_and_halved = {"bands": [_band(1.0, 2.0), _band(0.5, 0.25)]}
    assert spectral_error(doubled_and_halved) == pytest.approx(math.log(2))
    assert spectral_error({"bands": [_band(0.3, 0.3), _band(0.1, 0.1)]}) == 0.0
    assert spectral_error({"bands": [_band(0.3, 0.0)]}) == math.inf  # a band with no variance
    assert spectral_error({"bands": [_band(0.0, 0.2)]}) is None  # nothing real to compare with
    assert spectral_error(None) is None


def _numpy_pixel_frechet(real: np.ndarray, generated: np.ndarray, k: int) -> float:
    real, generated = real.reshape(len(real), -1), generated.reshape(len(generated), -1)
    _, vectors = np.linalg.eigh(np.cov(real, rowvar=False, bias=True))
    basis = vectors[:, -k:]
    a, b = real @ basis, generated @ basis
    sa, sb = np.cov(a, rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(sa @ sb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * root))


@pytest.fixture(scope="module")
def report_and_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("metrics")
    model = untrained_vae()
    save_model(model, path / "run", extra={"train": {"dataset": "digits", "limit": 400}})
    RunFolder(path / "run").seal()
    options = {"n_samples": 300, "sampler_params": PARAMS, "fid": "off", "progress": False}
    report = correct(
        path / "run", "temperature,ot,spectral", path / "out", curve=True, pixel_frechet_k=10,
        **options,
    )  # fmt: skip
    return report, model, path / "out"


def test_pixel_frechet_agrees_with_numpy_and_scipy(report_and_run):
    report, model, out = report_and_run
    assert report["settings"]["pixel_frechet_k"] == 10
    test = load("digits", "test").images.to(torch.float64).numpy()
    codes = torch.Generator().manual_seed(report["settings"]["codes_seed"])
    samples = load_sampler(out / "samplers" / "ot", model).sample(300, codes)
    expected = _numpy_pixel_frechet(test, samples.to(torch.float64).numpy(), 10)
    assert report["methods"]["ot"]["pixel_frechet"] == pytest.approx(expected, rel=1e-6)


def test_band_metrics_come_from_the_rows_spectra(report_and_run):
    report, _, _ = report_and_run
    baseline = report["baseline"]["spectrum"]["bands"]
    for row in report["methods"].values():
        bands = row["spectrum"]["bands"]
        for closed, band, base in zip(row["band_gap_closed"], bands, baseline, strict=True):
            gap = base["var_real"] - base["var_generated"]
            assert closed == pytest.approx((band["var_generated"] - base["var_generated"]) / gap)
        logs = [abs(math.log(b["var_generated"] / b["var_real"])) for b in bands]
        assert row["spectral_error"] == pytest.approx(np.mean(logs))
    assert report["methods"]["prior"]["band_gap_closed"] == [0.0] * len(baseline)


def test_the_price_on_reconstructions(report_and_run):
    report, model, out = report_and_run
    test = load("digits", "test").images
    reconstructed = model.reconstruct(test)  # decode(mu): the mean protocol
    mse_before = float(((test.double() - reconstructed.double()) ** 2).mean())
    for name in ("ot", "spectral"):
        row = report["methods"][name]
        mapped = load_sampler(out / "samplers" / name, model).transform(reconstructed).double()
        assert row["reconstruction_mse_before"] == pytest.approx(mse_before, rel=1e-6)
        after = float(((test.double() - mapped) ** 2).mean())
        assert row["reconstruction_mse_after"] == pytest.approx(after, rel=1e-6)
        regained = mapped.var(0, correction=0) - reconstructed.double().var(0, correction=0)
        assert row["variance_regained"] == pytest.approx(float(regained.mean()), rel=1e-6)
        assert row["price_reason"] is None
        # the curve: strength 0 is the decoder's own MSE, strength 1 the row's price and FD
        curve = row["curve"]
        assert [point["strength"] for point in curve] == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert curve[0]["reconstruction_mse"] == pytest.approx(mse_before, rel=1e-6)
        assert curve[-1]["reconstruction_mse"] == pytest.approx(after, rel=1e-6)
        assert curve[-1]["pixel_frechet"] == pytest.approx(row["pixel_frechet"], rel=1e-9)
        var_real = report["baseline"]["var_real"]
        assert curve[-1]["variance_kept"] == pytest.approx(row["var_generated"] / var_real)
    for name in ("prior", "temperature"):  # latent-space methods: no price, and why
        row = report["methods"][name]
        assert row["reconstruction_mse_after"] is None and row["variance_regained"] is None
        assert "latent codes" in row["price_reason"] and "curve" not in row
    assert (out / "curve.png").stat().st_size > 1000
    assert RunFolder(out).verify("curve.png")


def test_price_sentences_say_what_the_numbers_are():
    from varloss.report.remedies import price_sentence

    raised = price_sentence("ot", 0.02, 0.03)
    assert "raises" in raised and "1.50 times, within the 2x bound" in raised
    assert "2.50 times, beyond the 2x bound" in price_sentence("match", 0.02, 0.05)
    lowered = price_sentence("spectral", 0.04, 0.03)  # an MSE that drops is not a price
    assert "lowers" in lowered and "0.75 times" in lowered and "raises" not in lowered
    zero = price_sentence("ot", 0.0, 0.01)  # no ratio to a zero MSE
    assert "no error to begin with (MSE 0)" in zero and "times" not in zero


def test_band_and_headline_sentences_with_overshoot_and_negative_gaps():
    from varloss.report.remedies import band_sentences, headline_sentence

    bands = [{"lo": 0.0, "hi": 0.25}, {"lo": 0.25, "hi": 0.5}, {"lo": 0.5, "hi": 0.75}]
    methods = {
        "ot": {"band_gap_closed": [0.9, 1.0, 0.95], "spectrum": {"bands": bands}},
        "match": {
            "band_gap_closed": [0.5, 1.55, -0.4],
            "spectral_error": 0.31,
            "spectrum": {"bands": bands},
        },
        "prior": {"band_gap_closed": [0.0, 0.0, 0.0], "spectrum": {"bands": bands}},
    }
    (sentence,) = band_sentences(methods)  # ot overshoots nowhere: nothing to say
    assert sentence.startswith("match gives back more than the gap in 1 of 3 frequency bands")
    assert "up to 1.55 times it, at 0.25-0.50" in sentence
    assert "in 1 of 3 bands (down to -0.40 of the gap, at 0.50-0.75" in sentence
    assert sentence.endswith("its spectral error is 0.31.")
    rows = {"prior": {"pixel_frechet": 1.5}, "ot": {"pixel_frechet": 2.0}}
    (first,) = headline_sentence(rows, "pixel_frechet")
    assert "prior comes first (1.5): no remedy improves on the plain prior sampler" in first
    rows = {"ot": {"fid_after": 3.0}, "prior": {"fid_after": 9.0}}
    assert headline_sentence(rows, "fid") == [
        "Sorted by FID (lower is better), ot comes first (3 against the prior's 9)."
    ]
    assert headline_sentence(rows, None) == []


def test_the_band_cell_shows_overshoot_and_negative_bands():
    from varloss.report.pages.correct import band_cell

    cell = band_cell([0.5, 1.55, -0.4, None])
    assert cell.text == "50% 155% -40% –"
    assert cell.value == pytest.approx(1.4)  # the worst band: -40%, 1.4 from closing its gap
    assert band_cell([1.0, 1.0]).value == 0.0
    assert band_cell(None).text == "–" and band_cell([None]).value is None
