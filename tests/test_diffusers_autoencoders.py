"""diffusers' other autoencoders through `diffusers:PATH` (AsymmetricAutoencoderKL,
AutoencoderTiny, VQModel, AutoencoderDC): tiny random configurations saved by `save_pretrained`,
loaded offline, reconstructions equal to the model's own encode/decode by hand, deterministic
codes said so (a sampled reconstruction is the mean's), and measured through the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from test_cli import invoke

from varloss.models.adapters import load_adapter

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers is imported: a hub is never asked
diffusers = pytest.importorskip("diffusers")

TWO = ("DownEncoderBlock2D", "DownEncoderBlock2D")
UP = ("UpDecoderBlock2D", "UpDecoderBlock2D")
CONFIGS = {
    "AsymmetricAutoencoderKL": dict(
        down_block_types=TWO, down_block_out_channels=(8, 16), up_block_types=UP,
        up_block_out_channels=(8, 16), latent_channels=2, norm_num_groups=4, sample_size=16,
    ),
    "AutoencoderTiny": dict(
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=2,
    ),
    "VQModel": dict(
        down_block_types=TWO, up_block_types=UP, block_out_channels=(8, 16), latent_channels=2,
        num_vq_embeddings=16, norm_num_groups=4, sample_size=16,
    ),
    "AutoencoderDC": dict(
        latent_channels=2, attention_head_dim=4, encoder_block_out_channels=(8, 16),
        decoder_block_out_channels=(8, 16), encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1), encoder_qkv_multiscales=((), ()),
        decoder_qkv_multiscales=((), ()), decoder_norm_types="batch_norm",
    ),
}  # fmt: skip
DETERMINISTIC = {"AutoencoderTiny", "VQModel", "AutoencoderDC"}


def installed() -> list[str]:
    return [name for name in CONFIGS if hasattr(diffusers, name)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    saved = {}
    for name in installed():
        torch.manual_seed(0)
        model = getattr(diffusers, name)(**CONFIGS[name])
        folder = tmp_path_factory.mktemp(name) / "vae"
        model.eval().save_pretrained(str(folder))
        saved[name] = str(folder)
    return saved


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    small = np.random.default_rng(seed).random((n, 3, 4, 4))
    return torch.from_numpy(np.kron(small, np.ones((1, 1, 4, 4))).astype(np.float32))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_reconstructions_equal_the_model_by_hand(folders, name) -> None:
    if name not in folders:
        pytest.skip(f"diffusers {diffusers.__version__} has no {name}")
    adapter = load_adapter(f"diffusers:{folders[name]}")
    x = images()
    reconstructed = adapter.reconstruct(x)
    model = (
        getattr(diffusers, name)
        .from_pretrained(folders[name], local_files_only=True, low_cpu_mem_usage=False)
        .eval()
    )
    with torch.no_grad():  # by hand: [0, 1] -> [-1, 1], the code (mean), decode, clip, back
        encoded = model.encode(x * 2 - 1, return_dict=False)[0]
        code = encoded if name in DETERMINISTIC else encoded.mean
        expected = (model.decode(code, return_dict=False)[0].clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(reconstructed, expected, rtol=1e-5, atol=1e-6)
    mu, logvar = adapter.encode(x)
    assert mu.shape[0] == 6 and mu.shape[-1] == 16 // adapter.downsampling
    assert adapter.describe()["class"] == name
    noise = torch.randn(6, adapter.latent_dim, generator=torch.Generator().manual_seed(1))
    if name in DETERMINISTIC:
        assert torch.isneginf(logvar).all()
        assert adapter.describe()["codes"].startswith("deterministic")
        torch.testing.assert_close(adapter.reconstruct(x, noise), reconstructed)
    else:
        assert torch.isfinite(logvar).all()
        assert not torch.allclose(adapter.reconstruct(x, noise), reconstructed)
    assert not adapter.generates_images and name in adapter.generation_note


def test_a_vq_model_is_measured_through_the_cli(folders, tmp_path, monkeypatch, capsys) -> None:
    if "VQModel" not in folders:
        pytest.skip("no VQModel in this diffusers")
    real = images(20, seed=2).numpy()
    np.save(tmp_path / "real.npy", real)
    code, _, err = invoke(
        monkeypatch, capsys, "measure", "--model", f"diffusers:{folders['VQModel']}",
        "--real", str(tmp_path / "real.npy"), "--json", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    adapter = load_adapter(f"diffusers:{folders['VQModel']}")
    reconstructed = adapter.reconstruct(torch.from_numpy(real)).double().numpy()
    x, y = real.reshape(20, -1).astype(np.float64), reconstructed.reshape(20, -1)
    expected = x.var(0).mean() - y.var(0).mean()
    assert report["variance_loss_reconstructed"] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    # beside it, what autoencoder papers report: PSNR (here by hand) and SSIM
    psnr = np.mean(10 * np.log10(1 / ((x - y) ** 2).mean(1)))
    assert report["quality"]["psnr"] == pytest.approx(psnr, rel=1e-5)
    assert 0 < report["quality"]["ssim"] <= 1 and report["quality"]["rfid"] is None
