"""`varloss measure` reports what autoencoder papers report beside the variance loss: PSNR and
SSIM (always, with reconstructions) and rFID (`--fid`), checked against numpy / scipy written
from the definitions, for files and for a model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal
import torch
from test_cli import invoke
from torch import nn

from varloss.quality import frechet_distance, get_extractor
from varloss.quality.reconstruction import ReconstructionQuality


def numpy_psnr(real: np.ndarray, reconstructed: np.ndarray) -> float:
    mse = ((real.astype(np.float64) - reconstructed) ** 2).reshape(len(real), -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / mse)))


def numpy_ssim(real: np.ndarray, reconstructed: np.ndarray) -> float:
    """Wang et al. 2004, Gaussian window 11 / sigma 1.5, images reflect-padded by 5 pixels so
    the map covers every pixel (as torchmetrics computes it), mean over the map and channels."""
    offsets = np.arange(11) - 5
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for x_image, y_image in zip(
        real.astype(np.float64), reconstructed.astype(np.float64), strict=True
    ):
        maps = []
        for x, y in zip(x_image, y_image, strict=True):
            f = lambda a: scipy.signal.convolve2d(np.pad(a, 5, mode="reflect"), window, "valid")  # noqa: E731
            mx, my = f(x), f(y)
            vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
            maps.append(
                ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
        values.append(np.mean(maps))
    return float(np.mean(values))


def pairs(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = rng.uniform(0, 1, (n, 1, 16, 16)).astype(np.float32)
    noisy = np.clip(real + rng.normal(0, 0.1, real.shape), 0, 1).astype(np.float32)
    return real, noisy


def test_psnr_ssim_and_rfid_match_the_definitions() -> None:
    real, reconstructed = pairs()
    quality = ReconstructionQuality(extractor=None)
    for part in (slice(0, 5), slice(5, 12)):  # batches: the same numbers as one pass
        quality.update(torch.from_numpy(real[part]), torch.from_numpy(reconstructed[part]))
    result = quality.compute()
    assert result["psnr"] == pytest.approx(numpy_psnr(real, reconstructed), rel=1e-10)
    assert result["ssim"] == pytest.approx(numpy_ssim(real, reconstructed), abs=1e-6)
    assert result["rfid"] is None and result["settings"]["n"] == 12
    with_features = ReconstructionQuality(get_extractor(nn.Flatten()))
    with_features.update(torch.from_numpy(real), torch.from_numpy(reconstructed))
    x, y = real.reshape(12, -1).astype(np.float64), reconstructed.reshape(12, -1)
    expected = frechet_distance(x.mean(0), np.cov(x.T), y.mean(0), np.cov(y.T)).fid
    # the features go through the network in float32, as every extractor's do
    assert with_features.compute()["rfid"] == pytest.approx(expected, rel=1e-6)


def test_small_images_and_exact_reconstructions_say_so() -> None:
    real = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    quality = ReconstructionQuality()
    quality.update(real, real)
    result = quality.compute()
    assert result["psnr"] is None and result["settings"]["psnr_exact_images_left_out"] == 4
    assert result["ssim"] is None and "smaller than the SSIM window" in result["settings"]["ssim"]


def test_measure_reports_them_for_files(tmp_path, monkeypatch, capsys) -> None:
    real, reconstructed = pairs(30, seed=2)
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "rec.npy", reconstructed)
    code, out, err = invoke(
        monkeypatch, capsys, "measure", "--real", str(tmp_path / "real.npy"),
        "--reconstructed", str(tmp_path / "rec.npy"), "--json", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert code == 0, err
    assert "PSNR" in out and "SSIM" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["quality"]["psnr"] == pytest.approx(numpy_psnr(real, reconstructed), rel=1e-9)
    assert report["quality"]["ssim"] == pytest.approx(numpy_ssim(real, reconstructed), abs=1e-6)
    code, _, err = invoke(
        monkeypatch, capsys, "measure", "--real", str(tmp_path / "real.npy"),
        "--reconstructed", str(tmp_path / "rec.npy"), "--fid", "sometimes",
    )  # fmt: skip
    assert code == 2 and "--fid must be off, domain or inception" in err


def test_measure_compares_outputs_off_the_unit_range_and_flat_sets(tmp_path, monkeypatch, capsys):
    """A decoder's output a little outside [0, 1] is measured (the variance numbers as given),
    and its PSNR compares it as an image, clamped to [0, 1]; a flat N x D set has a PSNR and no
    SSIM (and says why); a declared --range is honoured by the quality numbers too."""
    real, reconstructed = pairs(30, seed=3)
    noisy = reconstructed + np.random.default_rng(4).normal(0, 0.2, reconstructed.shape)
    assert noisy.min() < -0.1 and noisy.max() > 1.1
    flat_real, flat_noisy = real.reshape(30, -1), noisy.reshape(30, -1)
    for name, array in {"real": real, "noisy": noisy, "flat_real": flat_real,
                        "flat_noisy": flat_noisy, "scaled": noisy * 255.0}.items():  # fmt: skip
        np.save(tmp_path / f"{name}.npy", array)
    cases = {
        "image": (["--real", "real.npy", "--reconstructed", "noisy.npy"], real, noisy),
        "flat": (["--real", "flat_real.npy", "--reconstructed", "flat_noisy.npy"], real, noisy),
        "declared": (
            [
                "--real",
                "real.npy",
                "--reconstructed",
                "scaled.npy",
                "--range",
                "reconstructed=0,255",
            ],
            real,
            noisy,
        ),  # fmt: skip
    }
    for case, (arguments, expected_real, expected_reconstructed) in cases.items():
        arguments = [str(tmp_path / a) if a.endswith(".npy") else a for a in arguments]
        out_json = tmp_path / f"{case}.json"
        code, _, err = invoke(monkeypatch, capsys, "measure", *arguments, "--json", str(out_json))
        assert code == 0, (case, err)
        report = json.loads(out_json.read_text())
        clamped = np.clip(expected_reconstructed, 0.0, 1.0)
        assert report["quality"]["psnr"] == pytest.approx(
            numpy_psnr(expected_real, clamped), rel=1e-9
        ), case
        mse = float(((expected_real - expected_reconstructed) ** 2).mean())
        assert report["mse"] == pytest.approx(mse, rel=1e-9), case  # the variance numbers: as given
        if case == "flat":
            assert report["quality"]["ssim"] is None
            assert "smaller than the SSIM window" in report["quality"]["settings"]["ssim"]


def test_measure_rfid_on_inception_reuses_the_cached_reference(tmp_path, monkeypatch, capsys):
    """--fid inception with a small TorchScript standing in for the weights: the rFID equals
    `fid` on the same features, and the real statistics come from the cache the second time."""
    from test_inception import SmallFeatures, scripted

    from varloss.data import load
    from varloss.quality import fid

    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    weights = scripted(SmallFeatures(), tmp_path / "w.pt")
    monkeypatch.setenv("VARLOSS_INCEPTION_WEIGHTS", weights)
    real = load("digits", "test").images.numpy()
    reconstructed = np.clip(real * 0.7 + 0.1, 0, 1).astype(np.float32)
    np.save(tmp_path / "rec.npy", reconstructed)
    command = ["measure", "--real", "digits:test", "--reconstructed", str(tmp_path / "rec.npy")]
    command += ["--fid", "inception", "--json", str(tmp_path / "r.json")]
    code, out, err = invoke(monkeypatch, capsys, *command)
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    expected = fid(real, reconstructed, features="inception", kid=False)["fid"]
    assert report["quality"]["rfid"] == pytest.approx(expected, rel=1e-6)
    assert "rFID" in out
    assert list((tmp_path / "cache" / "fid-stats").iterdir())  # the reference, cached
    code, _, err = invoke(monkeypatch, capsys, *command)
    assert code == 0 and json.loads((tmp_path / "r.json").read_text())["quality"][
        "rfid"
    ] == pytest.approx(expected, rel=1e-6)


def test_measure_table_prints_inf_and_the_exact_images_as_the_page_does(
    tmp_path, monkeypatch, capsys
) -> None:
    """Every image reconstructed exactly: the terminal table prints PSNR `inf` and the count (the
    JSON keeps None and the count); one exact image of four: the mean PSNR of the other three,
    computed here from the definition, and the one image left out."""
    monkeypatch.setenv("COLUMNS", "250")  # one table line per row
    real, noisy = pairs(4, seed=5)
    partly = np.concatenate([real[:1], noisy[1:]])  # image 0 reconstructed exactly
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "same.npy", real.copy())
    np.save(tmp_path / "partly.npy", partly)

    def psnr_row(reconstructed: str) -> tuple[list[str], dict]:
        code, out, err = invoke(
            monkeypatch, capsys, "measure", "--real", str(tmp_path / "real.npy"),
            "--reconstructed", str(tmp_path / reconstructed), "--json", str(tmp_path / "r.json"),
        )  # fmt: skip
        assert code == 0, err
        rows = [line for line in out.splitlines() if "PSNR, reconstructed (dB)" in line]
        assert len(rows) == 1, out
        cells = [cell.strip() for cell in rows[0].strip("│ ").split("│")]
        return cells, json.loads((tmp_path / "r.json").read_text())["quality"]

    cells, quality = psnr_row("same.npy")
    assert cells[1] == "inf"
    assert cells[2].endswith("infinite, all 4 images reconstructed exactly, MSE 0")
    assert quality["psnr"] is None and quality["settings"]["psnr_exact_images_left_out"] == 4
    cells, quality = psnr_row("partly.npy")
    expected = numpy_psnr(real[1:], partly[1:])
    assert quality["psnr"] == pytest.approx(expected, rel=1e-9)
    assert cells[1] == f"{expected:.4g}"
    assert cells[2].endswith(
        "1 image (25% of 4 images) reconstructed exactly was left out (infinite PSNR)"
    )
