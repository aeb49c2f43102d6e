"""The model zoo: every family trains, has the right shapes, and round-trips through a folder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from varloss.errors import InputError
from varloss.losses import gaussian_kl
from varloss.models import MODEL_FAMILIES, VAE, create_model, load_model, save_model
from varloss.models.draw import GaussianAttention
from varloss.runs import CONFIG_FILE, MANIFEST_FILE, MODEL_FILE, RunFolder

FAMILIES = ["dense", "conv", "resnet", "draw", "convdraw"]

# Small hyper-parameters so every family trains in a second or two on 2 shared CPU cores.
SMALL: dict[str, dict] = {
    "dense": {"hidden_sizes": (128,)},
    "conv": {"base_channels": 8, "hidden": 64},
    "resnet": {"base_channels": 8, "max_channels": 16},
    "draw": {"hidden": 64, "steps": 4},
    "convdraw": {"hidden_channels": 8, "canvas_channels": 8, "feature_channels": 8, "steps": 4},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(n: int = 64, side: int = 28, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Gaussian blobs at random positions: a learnable, MNIST-shaped data set in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=generator) * (side * 0.5) + side * 0.25
    width = 2.0 + 2.0 * torch.rand(n, 1, 1, generator=generator)
    grid = torch.arange(side, dtype=torch.float32)
    dy = (grid.view(1, side, 1) - centres[:, 0].view(n, 1, 1)) ** 2
    dx = (grid.view(1, 1, side) - centres[:, 1].view(n, 1, 1)) ** 2
    image = torch.exp(-(dx + dy) / (2 * width**2))
    return image.unsqueeze(1).repeat(1, channels, 1, 1)


def train_steps(model: VAE, x: torch.Tensor, steps: int, lr: float = 2e-3) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).loss.backward()
        optimizer.step()


def evaluate(model: VAE, x: torch.Tensor) -> tuple[float, float]:
    """(loss, mse) with a fixed reparameterisation seed, in eval mode (no balanced update)."""
    model.eval()
    torch.manual_seed(123)
    with torch.no_grad():
        terms = model(x)
    return terms.loss.item(), terms.mse.item()


def test_registry_lists_every_family() -> None:
    assert sorted(MODEL_FAMILIES) == sorted(FAMILIES)


@pytest.mark.parametrize(
    ("family", "loss"),
    [(f, None) for f in FAMILIES if f != "resnet"]
    + [pytest.param("resnet", None, marks=pytest.mark.slow), ("resnet", "balanced")],
)
def test_family_learns_on_blobs(family: str, loss: str | None) -> None:
    torch.manual_seed(0)
    x = blobs()
    model = create_model(family, (1, 28, 28), 8, loss=loss, **SMALL[family])
    loss_before, mse_before = evaluate(model, x)
    train_steps(model, x, steps=40)
    loss_after, mse_after = evaluate(model, x)
    assert math.isfinite(loss_after)
    assert mse_after < 0.6 * mse_before, (mse_before, mse_after)
    if model.config.loss == "balanced":
        # The balanced rule rescales its own loss as gamma shrinks, so compare its estimate.
        assert model.likelihood.running_mse.item() < 1.0
    else:
        assert loss_after < 0.8 * loss_before, (loss_before, loss_after)


@pytest.mark.slow
@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("family", ["conv", "resnet", "convdraw"])
def test_convolutional_families_learn_colour_images(family: str, side: int) -> None:
    """CIFAR- and CelebA-sized inputs (3 x 32 x 32, 3 x 64 x 64): blobs in random colours."""
    torch.manual_seed(0)
    colours = torch.rand(32, 3, 1, 1, generator=torch.Generator().manual_seed(1))
    x = blobs(32, side=side, channels=3) * colours
    model = create_model(family, (3, side, side), 8, **SMALL[family])
    loss_before, mse_before = evaluate(model, x)
    train_steps(model, x, steps=40)
    loss_after, mse_after = evaluate(model, x)
    assert math.isfinite(loss_after)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    assert mse_after < 0.6 * mse_before, (mse_before, mse_after)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 8, 8)])
def test_shapes_and_ranges(family: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    hyper = dict(SMALL[family])
    if family == "draw" and shape[1] != 28:
        hyper["read_attention"] = True  # keeps the 64 x 64 model small
        hyper["write_attention"] = True
    model = create_model(family, shape, 12, **hyper).eval()
    x = torch.rand(3, *shape)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        assert mu.shape == logvar.shape == (3, 12)
        recon = model.reconstruct(x)
        samples = model.sample(5, generator=torch.Generator().manual_seed(0))
        terms = model(x)
    assert recon.shape == x.shape and samples.shape == (5, *shape)
    for images in (recon, samples, terms.x_hat):
        assert images.min() >= 0 and images.max() <= 1
    assert terms.loss.dim() == 0 and torch.isfinite(terms.loss)


@pytest.mark.parametrize("family", ["conv", "resnet", "convdraw"])
def test_odd_sizes_fail_with_input_error(family: str) -> None:
    with pytest.raises(InputError, match="image"):
        create_model(family, (1, 27, 27), 8)


def test_dense_default_is_chollet() -> None:
    model = create_model("dense", (1, 28, 28), 2)
    assert model.config.loss == "bernoulli" and model.config.hidden_sizes == (256,)
    shapes = [tuple(p.shape) for name, p in model.named_parameters() if name.endswith("weight")]
    assert shapes == [(256, 784), (2, 256), (2, 256), (256, 2), (784, 256)]


def test_forward_is_negative_elbo_with_the_likelihood_weight() -> None:
    torch.manual_seed(0)
    model = create_model("dense", (1, 28, 28), 3, kl_weight=0.25).eval()
    x = blobs(8)
    torch.manual_seed(7)
    terms = model(x)
    torch.manual_seed(7)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        x_hat = model.decode(z)
    p = x_hat.double().clamp(1e-7, 1 - 1e-7)
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    kl = gaussian_kl(mu.double(), logvar.double())
    assert terms.loss.item() == pytest.approx((bce + 0.25 * kl).mean().item(), rel=1e-5)
    assert terms.kl.item() == pytest.approx(kl.mean().item(), rel=1e-5)
    assert terms.mse.item() == pytest.approx((x - x_hat).pow(2).mean().item(), rel=1e-5)


@pytest.mark.parametrize("family", ["draw", "convdraw"])
def test_iterative_reconstruction_is_the_deterministic_path(family: str) -> None:
    torch.manual_seed(0)
    model = create_model(family, (1, 28, 28), 8, **SMALL[family]).eval()
    x = blobs(4)
    with torch.no_grad():
        mu, logvar, logits = model._run(x, sample=False)
        torch.testing.assert_close(model.reconstruct(x), torch.sigmoid(logits))
        torch.testing.assert_close(model.encode(x)[0], mu)
    # KL is summed over the steps: the flat latent holds every step's code.
    assert mu.shape == (4, 8)


def test_draw_filterbank_matches_paper_formula() -> None:
    attention = GaussianAttention(hidden=4, height=6, width=5, size=3)
    params = torch.tensor([[0.2, -0.3, math.log(1.5), math.log(0.8), math.log(2.0)]])
    with torch.no_grad():
        attention.params.weight.zero_()
        attention.params.bias.copy_(params[0])
        fy, fx, gamma = attention.filterbanks(torch.zeros(1, 4))
    # Gregor et al. 2015, eqs. 21-26, written out in numpy.
    gx, gy = (5 + 1) / 2 * 1.2, (6 + 1) / 2 * 0.7
    delta = (6 - 1) / (3 - 1) * 0.8
    var = 1.5
    offsets = np.arange(1, 4) - 3 / 2 - 0.5
    fx_ref = np.exp(-((np.arange(1, 6)[None] - (gx + offsets * delta)[:, None]) ** 2) / (2 * var))
    fy_ref = np.exp(-((np.arange(1, 7)[None] - (gy + offsets * delta)[:, None]) ** 2) / (2 * var))
    fx_ref /= fx_ref.sum(1, keepdims=True)
    fy_ref /= fy_ref.sum(1, keepdims=True)
    np.testing.assert_allclose(fx[0].numpy(), fx_ref, rtol=1e-5)
    np.testing.assert_allclose(fy[0].numpy(), fy_ref, rtol=1e-5)
    assert gamma.item() == pytest.approx(2.0)
    image = torch.rand(1, 2, 6, 5)
    glimpse = attention.read(image, fy, fx)
    reference = np.einsum("nh,chw,mw->cnm", fy_ref, image[0].double().numpy(), fx_ref)
    np.testing.assert_allclose(glimpse[0].numpy(), reference, rtol=1e-5)


@pytest.mark.parametrize(
    ("family", "loss"),
    [
        ("dense", "learned-gamma"),
        ("conv", "gaussian"),
        ("resnet", "balanced"),
        ("draw", "bernoulli"),
        ("convdraw", "bernoulli"),
        ("conv", "sigma"),
    ],
)
def test_save_load_round_trip_is_exact(family: str, loss: str, tmp_path) -> None:
    torch.manual_seed(0)
    x = blobs(16)
    model = create_model(family, (1, 28, 28), 8, loss=loss, **SMALL[family])
    train_steps(model, x, steps=3)  # moves weights, learned gamma, balanced running mse
    model.eval()
    save_model(model, tmp_path / "run", extra={"train": {"epochs": 3}})
    saved = RunFolder(tmp_path / "run").read_json(CONFIG_FILE)
    assert saved["family"] == family and saved["train"] == {"epochs": 3}
    assert saved["model"]["loss"] == loss and saved["model"]["latent_dim"] == 8
    loaded = load_model(tmp_path / "run")
    assert type(loaded) is type(model) and loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    z = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), model.decode(z))
        assert torch.equal(loaded.encode(x)[0], model.encode(x)[0])
        assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
        first = model.sample(4, generator=torch.Generator().manual_seed(3))
        second = loaded.sample(4, generator=torch.Generator().manual_seed(3))
        assert torch.equal(first, second)
        torch.manual_seed(1)
        loss_a = model(x).loss
        torch.manual_seed(1)
        loss_b = loaded(x).loss
    assert torch.equal(loss_a, loss_b)
    if loss == "balanced":
        assert loaded.likelihood.running_mse.item() < 1.0
    if loss == "sigma":  # the last training batch's sigma, below 1 for images in [0, 1]
        assert loaded.likelihood.log_sigma.item() < 0.0


def test_sample_temperature_zero_decodes_the_origin() -> None:
    torch.manual_seed(0)
    model = create_model("conv", (1, 28, 28), 4, **SMALL["conv"]).eval()
    with torch.no_grad():
        cold = model.sample(3, temperature=0.0)
        origin = model.decode(torch.zeros(1, 4))
    torch.testing.assert_close(cold, origin.expand(3, -1, -1, -1))


def test_bad_input_is_rejected_clearly(tmp_path) -> None:
    with pytest.raises(InputError, match="unknown model family .vqvae.; known: conv, "):
        create_model("vqvae", (1, 28, 28), 2)
    with pytest.raises(InputError, match="hyper-parameters"):
        create_model("dense", (1, 28, 28), 2, depth=3)
    with pytest.raises(InputError, match="steps must divide"):
        create_model("draw", (1, 28, 28), 10, steps=3)
    model = create_model("dense", (1, 28, 28), 2)
    with pytest.raises(InputError, match="latent codes"):
        model.decode(torch.zeros(2, 3))
    with pytest.raises(InputError, match="images must have shape"):
        model.encode(torch.zeros(2, 1, 32, 32))
    with pytest.raises(InputError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(InputError, match="reserved"):
        save_model(model, tmp_path / "m", extra={"model": {}})


def test_auto_resolved_settings_are_saved_explicitly(tmp_path) -> None:
    model = create_model("convdraw", (1, 28, 28), 392, hidden_channels=8)
    assert (model.config.steps, model.config.latent_side, model.config.latent_channels) == (8, 7, 1)
    draw = create_model("draw", (1, 28, 28), 20, hidden=16)
    assert draw.config.steps == 10 and draw.config.write_attention is True
    assert draw.config.read_attention is False
    save_model(draw, tmp_path / "d")
    saved = RunFolder(tmp_path / "d").read_json(CONFIG_FILE)["model"]
    assert saved["steps"] == 10 and saved["write_attention"] is True


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":  # one byte of the weights, same size
        path.write_bytes(data[:-8] + bytes([data[-8] ^ 0x10]) + data[-7:])
    else:
        path.write_text('{"family": "dense", "model": {')


@pytest.mark.parametrize(
    ("name", "how"),
    [(MODEL_FILE, "truncate"), (MODEL_FILE, "flip"), (CONFIG_FILE, "invalid-json")],
)
def test_a_damaged_saved_model_is_named_in_one_sentence(tmp_path, name: str, how: str) -> None:
    save_model(create_model("dense", (1, 8, 8), 2, hidden_sizes=(8,)), tmp_path / "m")
    _damage(tmp_path / "m" / name, how)
    with pytest.raises(InputError, match=rf"m/{name} is damaged \(its SHA-256 does not match"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize(
    ("name", "how", "message"),
    [
        (MODEL_FILE, "truncate", "could not be read as a safetensors file"),
        (CONFIG_FILE, "invalid-json", "is damaged \\(not valid JSON"),
    ],
)
def test_damage_is_named_without_a_manifest_too(tmp_path, name: str, how: str, message) -> None:
    """A folder without manifest (saved before manifests existed) fails on reading instead."""
    save_model(create_model("dense", (1, 8, 8), 2, hidden_sizes=(8,)), tmp_path / "m")
    (tmp_path / "m" / MANIFEST_FILE).unlink()
    _damage(tmp_path / "m" / name, how)
    with pytest.raises(InputError, match=rf"m/{name} {message}"):
        load_model(tmp_path / "m")
