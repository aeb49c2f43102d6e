"""The spectrum and PCA splits of `measure`: against a direct numpy FFT / eigendecomposition,
the laws they must show (identity, blur, noise, PCA reconstruction), merging, DDP."""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import varloss
from varloss.errors import InputError
from varloss.variance import VarianceSpectrum
from varloss.variance.spectrum import QUANTITIES, SpectrumAccumulator

SPLIT_KEYS = ("var_real", "var_reconstructed", "var_generated", "mse", "bias2", "cov_term")


def _images(n: int = 240, shape=(2, 9, 8), seed: int = 0):
    rng = np.random.default_rng(seed)
    real = rng.random((n, *shape))
    reconstructed = 0.6 * real + 0.2 * rng.random(real.shape) + 0.05
    generated = 0.5 * rng.random((n // 2 + 7, *shape))
    return real, reconstructed, generated


def _numpy_bands(real, reconstructed, generated, bands):
    """Per-band quantities from the full complex 2-D FFT, computed directly in numpy."""
    _, channels, height, width = real.shape
    fx, fy = np.fft.fft2(real, norm="ortho"), np.fft.fft2(reconstructed, norm="ortho")
    fg = np.fft.fft2(generated, norm="ortho")
    mx, my = fx.mean(0), fy.mean(0)
    per_frequency = {
        "var_real": np.mean(np.abs(fx - mx) ** 2, axis=0),
        "var_reconstructed": np.mean(np.abs(fy - my) ** 2, axis=0),
        "var_generated": np.mean(np.abs(fg - fg.mean(0)) ** 2, axis=0),
        "mse": np.mean(np.abs(fx - fy) ** 2, axis=0),
        "bias2": np.abs(mx - my) ** 2,
        "cov_term": 2 * np.mean(np.real((fy - my) * np.conj((fx - fy) - (mx - my))), axis=0),
    }
    freq_y, freq_x = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")
    radius = np.hypot(freq_y, freq_x)
    edges = np.linspace(0, radius.max(), bands + 1)
    band = np.minimum(np.digitize(radius, edges) - 1, bands - 1)
    pixels = channels * height * width
    result = {
        key: np.array([value[:, band == b].sum() / pixels for b in range(bands)])
        for key, value in per_frequency.items()
    }
    high = radius >= 0.25
    loss = per_frequency["var_real"] - per_frequency["var_reconstructed"]
    result["high_share"] = loss[:, high].sum() / loss.sum()
    return edges, result


def _column(spectrum, key):
    return np.array([band[key] for band in spectrum["bands"]])


@pytest.mark.parametrize("shape", [(2, 9, 8), (1, 7, 7), (3, 4, 6)])
def test_bands_equal_a_direct_numpy_fft(shape) -> None:
    real, reconstructed, generated = _images(shape=shape)
    report = varloss.measure(real, reconstructed, generated, spectrum=5, batch_size=37)
    edges, expected = _numpy_bands(real, reconstructed, generated, 5)
    spectrum = report.spectrum
    np.testing.assert_allclose(spectrum["edges"], edges, rtol=1e-12)
    for key in SPLIT_KEYS:
        np.testing.assert_allclose(_column(spectrum, key), expected[key], rtol=1e-9, atol=1e-15)
    assert spectrum["high_frequency_share"]["reconstructed"] == pytest.approx(
        expected["high_share"], rel=1e-9
    )
    kept = expected["var_reconstructed"] / expected["var_real"]
    np.testing.assert_allclose(_column(spectrum, "kept_reconstructed"), kept, rtol=1e-9)


@pytest.mark.parametrize("threads", [2, 3])
def test_row_blocks_on_several_threads_equal_numpy(threads: int) -> None:
    """With several torch threads the batch is cut into row blocks reduced in a kept thread pool
    (each thread with its own buffers); twice, so that the second batch reuses them."""
    real, reconstructed, generated = _images(n=400, shape=(1, 12, 10))
    _, expected = _numpy_bands(real, reconstructed, generated, 4)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reports = [
            varloss.measure(real, reconstructed, generated, spectrum=4, batch_size=200)
            for _ in range(2)
        ]
    finally:
        torch.set_num_threads(previous)
    for report in reports:
        for key in SPLIT_KEYS:
            np.testing.assert_allclose(
                _column(report.spectrum, key), expected[key], rtol=1e-9, atol=1e-15
            )
        assert report.var_real == pytest.approx(np.var(real, axis=0).mean(), rel=1e-12)


def test_bands_sum_to_the_measure_totals() -> None:
    real, reconstructed, generated = _images()
    report = varloss.measure(real, reconstructed, generated, spectrum=True)
    assert len(report.spectrum["bands"]) == 8
    for key in QUANTITIES:
        total = sum(_column(report.spectrum, key))
        assert total == pytest.approx(getattr(report, key), rel=1e-9), key
    # the identity holds band by band
    for band in report.spectrum["bands"]:
        identity = band["mse"] - band["bias2"] + band["cov_term"]
        assert band["variance_loss_reconstructed"] == pytest.approx(identity, rel=1e-9, abs=1e-15)


def test_identity_reconstructions_lose_nothing_in_any_band() -> None:
    real, _, _ = _images()
    spectrum = varloss.measure(real, real.copy(), spectrum=4).spectrum
    for band in spectrum["bands"]:
        assert band["variance_loss_reconstructed"] == 0.0
        assert band["mse"] == 0.0
        assert band["kept_reconstructed"] == 1.0
        assert band["var_generated"] is None and band["kept_generated"] is None


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (periodic) by multiplying the spectrum with the Gaussian's transfer."""
    freq_y, freq_x = np.meshgrid(
        np.fft.fftfreq(images.shape[-2]), np.fft.fftfreq(images.shape[-1]), indexing="ij"
    )
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (freq_y**2 + freq_x**2))
    return np.real(np.fft.ifft2(np.fft.fft2(images) * transfer))


def test_a_gaussian_blur_loses_variance_in_the_high_bands() -> None:
    rng = np.random.default_rng(1)
    real = rng.random((400, 1, 16, 16))
    blurred = _blur(real, sigma=1.0)
    spectrum = varloss.measure(real, blurred, spectrum=8).spectrum
    kept = _column(spectrum, "kept_reconstructed")
    assert np.all(np.diff(kept) < 0)  # less and less kept as the frequency rises
    assert kept[0] > 0.8 and kept[-1] < 0.01
    assert spectrum["high_frequency_share"]["reconstructed"] > 0.6
    assert np.all(_column(spectrum, "variance_loss_reconstructed") >= 0)


def test_white_noise_gives_a_negative_loss_in_every_band() -> None:
    rng = np.random.default_rng(2)
    real = _blur(rng.random((500, 1, 12, 12)), sigma=0.7)
    noisy = real + rng.normal(0, 0.1, real.shape)
    spectrum = varloss.measure(real, generated=noisy, spectrum=6).spectrum
    losses = _column(spectrum, "variance_loss_generated")
    assert np.all(losses < 0)
    # white noise: each band gains about 0.01 times its share of the frequencies
    assert sum(losses) == pytest.approx(-0.01, rel=0.1)


def test_merging_in_any_order_gives_the_same_numbers() -> None:
    real, reconstructed, generated = _images()
    rows = [torch.from_numpy(a.reshape(len(a), -1)) for a in (real, reconstructed, generated)]
    dims = real.shape[1:]
    parts = []
    for index in np.array_split(np.random.default_rng(3).permutation(len(real)), 5):
        part = SpectrumAccumulator(bands=6)
        part.update_paired(rows[0][index], rows[1][index], dims)
        parts.append(part)
    part = SpectrumAccumulator(bands=6)
    part.update_generated(rows[2], dims)
    parts.append(part)
    forward, backward = SpectrumAccumulator(bands=6), SpectrumAccumulator(bands=6)
    for one in parts:
        forward.merge(one)
    for one in parts[::-1]:
        backward.merge(one)
    whole = varloss.measure(real, reconstructed, generated, spectrum=6, batch_size=1000).spectrum
    for key in SPLIT_KEYS:
        for merged in (forward.result(), backward.result()):
            np.testing.assert_allclose(_column(merged, key), _column(whole, key), rtol=1e-11)


def test_metric_merge_state_equals_measure() -> None:
    real, reconstructed, generated = (torch.from_numpy(a) for a in _images())
    a, b = VarianceSpectrum(bands=4), VarianceSpectrum(bands=4)
    a.update(real[:100], reconstructed[:100], generated[:50])
    b.update(real[100:], reconstructed[100:], generated[50:])
    a.merge_state(b)
    whole = varloss.measure(real.numpy(), reconstructed.numpy(), generated.numpy(), spectrum=4)
    for key in SPLIT_KEYS:
        np.testing.assert_allclose(
            _column(a.compute(), key), _column(whole.spectrum, key), rtol=1e-11
        )


def test_bad_spectrum_inputs_are_refused_in_one_sentence() -> None:
    real, reconstructed, _ = _images()
    flat = real.reshape(len(real), -1)
    with pytest.raises(InputError, match="needs images"):
        varloss.measure(flat, flat, spectrum=True)
    with pytest.raises(InputError, match="bands must be a positive integer"):
        varloss.measure(real, reconstructed, spectrum=0)
    with pytest.raises(InputError, match="--pca-limit"):
        varloss.measure(real, reconstructed, pca=3, pca_limit=100)
    with pytest.raises(InputError, match="pca must be a positive integer"):
        varloss.measure(real, reconstructed, pca=-2)


def test_pca_reconstruction_loses_exactly_its_dropped_components() -> None:
    rng = np.random.default_rng(4)
    n, d, kept = 3000, 36, 5
    scales = np.linspace(3.0, 0.2, d)  # distinct eigenvalues
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    real = (rng.normal(size=(n, d)) * scales) @ basis.T + 0.5
    mean = real.mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(real.T, bias=True))
    top = eigenvectors[:, ::-1][:, :kept]
    reconstructed = mean + (real - mean) @ top @ top.T
    images = real.reshape(n, 1, 6, 6)
    report = varloss.measure(images, reconstructed.reshape(images.shape), pca=8, batch_size=700)
    lambdas = eigenvalues[::-1] / d
    components = report.pca["components"]
    losses = np.array([c["variance_loss_reconstructed"] for c in components])
    np.testing.assert_allclose([c["var_real"] for c in components], lambdas[:8], rtol=1e-9)
    np.testing.assert_allclose(losses[:kept], 0.0, atol=1e-12)
    np.testing.assert_allclose(losses[kept:], lambdas[kept:8], rtol=1e-9)
    rest = report.pca["rest"]["variance_loss_reconstructed"]
    assert rest == pytest.approx(lambdas[8:].sum(), rel=1e-9)
    assert losses.sum() + rest == pytest.approx(report.variance_loss_reconstructed, rel=1e-9)
    for c in components:  # an orthogonal projection: no bias, no covariance term
        assert abs(c["bias2"]) < 1e-12 and abs(c["cov_term"]) < 1e-12


def test_pca_split_sums_to_the_totals_with_generated_samples() -> None:
    real, reconstructed, generated = _images(shape=(1, 5, 5))
    report = varloss.measure(real, reconstructed, generated, pca=4)
    pca = report.pca
    for key in (*SPLIT_KEYS, "variance_loss_generated"):
        total = sum(c[key] for c in pca["components"]) + pca["rest"][key]
        assert total == pytest.approx(getattr(report, key), rel=1e-9), key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        real, reconstructed, generated = (torch.from_numpy(a) for a in _images())
        metric = VarianceSpectrum(bands=5)
        index = torch.arange(len(real))[rank::world]  # uneven shards, several batches per rank
        for part, gen in zip(
            index.tensor_split(3), generated[rank::world].tensor_split(3), strict=True
        ):
            metric.update(real[part], reconstructed=reconstructed[part], generated=gen)
        result = metric.sync_compute()
        if rank == 0:
            queue.put(result)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process() -> None:
    context = mp.get_context("spawn")
    queue = context.Queue()
    mp.start_processes(
        _worker, args=(2, _free_port(), queue), nprocs=2, join=True, start_method="spawn"
    )
    merged = queue.get(timeout=60)
    real, reconstructed, generated = _images()
    whole = varloss.measure(real, reconstructed, generated, spectrum=5).spectrum
    for key in SPLIT_KEYS:
        np.testing.assert_allclose(_column(merged, key), _column(whole, key), rtol=1e-11)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_spectrum_on_a_gpu_equals_the_cpu() -> None:
    real, reconstructed, generated = (torch.from_numpy(a) for a in _images())
    metric = VarianceSpectrum(bands=5).cuda()
    metric.update(real.cuda(), reconstructed.cuda(), generated.cuda())
    cpu = varloss.measure(real.numpy(), reconstructed.numpy(), generated.numpy(), spectrum=5)
    for key in SPLIT_KEYS:
        np.testing.assert_allclose(
            _column(metric.compute(), key), _column(cpu.spectrum, key), rtol=1e-9
        )


def _invoke(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `varloss ARGS`."""
    from varloss.cli import run

    monkeypatch.setattr(sys, "argv", ["varloss", *args])
    with pytest.raises(SystemExit) as stop:
        run()
    captured = capsys.readouterr()
    return int(stop.value.code or 0), captured.out, captured.err


def test_measure_command_writes_the_splits(tmp_path, monkeypatch, capsys) -> None:
    real, reconstructed, generated = _images(n=120, shape=(1, 8, 8))
    for name, array in (("real", real), ("recon", reconstructed), ("gen", generated)):
        np.save(tmp_path / f"{name}.npy", array)
    out = tmp_path / "r.json"
    code, printed, err = _invoke(
        monkeypatch, capsys, "measure", "--real", str(tmp_path / "real.npy"),
        "--reconstructed", str(tmp_path / "recon.npy"), "--generated", str(tmp_path / "gen.npy"),
        "--spectrum", "--bands", "4", "--pca", "3", "--json", str(out),
        "--maps", str(tmp_path / "maps.png"),
    )  # fmt: skip
    assert code == 0, err
    saved = json.loads(out.read_text())
    assert [len(saved["spectrum"]["bands"]), saved["pca"]["k"]] == [4, 3]
    band = saved["spectrum"]["bands"][0]
    assert set(band) >= {"lo", "hi", "kept_reconstructed", "kept_generated", *QUANTITIES}
    assert "by radial frequency" in printed and "principal direction" in printed
    for name in ("maps.png", "maps-spectrum.png", "maps-pca.png"):
        assert (tmp_path / name).stat().st_size > 1000
    code, _, err = _invoke(
        monkeypatch, capsys, "measure", "--real", str(tmp_path / "real.npy"),
        "--reconstructed", str(tmp_path / "recon.npy"), "--pca", "2", "--pca-limit", "10",
    )  # fmt: skip
    assert code != 0 and "--pca-limit" in err and "Traceback" not in err
