"""Models from elsewhere: a pythae VAE trained here and saved with pythae's own `save`, a small
diffusers `AutoencoderKL` saved with `save_pretrained`, measured through the CLI and equal to
measuring their outputs by hand (numpy); a remedy fitted on the pythae model closes part of its
generated variance gap; bad input is one sentence. Nothing reaches a hub (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _digits_vae import numpy_pixel_variance, untrained_vae
from PIL import Image
from test_cli import invoke

from varloss.cli.correct import sampler_params
from varloss.data import load
from varloss.errors import InputError
from varloss.models import PLUGINS_ENV, save_model
from varloss.models.adapters import ADAPTERS, VarlossAdapter, as_adapter, load_adapter
from varloss.samplers import ALL_METHODS
from varloss.variance import measure_model

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers is imported: a hub is never asked
pythae_models = pytest.importorskip("pythae.models")
diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pythae_folder(tmp_path_factory) -> Path:
    """A pythae VAE on 8 x 8 digits, 300 seeded Adam steps of its own loss, saved by pythae."""
    torch.manual_seed(0)
    config = pythae_models.VAEConfig(input_dim=(1, 8, 8), latent_dim=4, reconstruction_loss="bce")
    model = pythae_models.VAE(config)
    images = load("digits", "train").images
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batches = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for _ in range(300):
        batch = images[torch.randint(0, images.shape[0], (128,), generator=batches)]
        loss = model({"data": batch}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("pythae") / "final_model"
    model.eval().save(str(folder))
    return folder


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory) -> Path:
    """A small AutoencoderKL (3 x 16 x 16 images, 2 x 8 x 8 latents) from a config, saved."""
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=2,
        norm_num_groups=4,
        sample_size=16,
    )
    folder = tmp_path_factory.mktemp("diffusers") / "vae"
    model.save_pretrained(str(folder))
    return folder


def colour_images(n: int = 40, seed: int = 0) -> np.ndarray:
    """n smooth colour images 3 x 16 x 16 in [0, 1] (upsampled noise), float32."""
    rng = np.random.default_rng(seed)
    small = rng.random((n, 3, 4, 4))
    return np.kron(small, np.ones((1, 1, 4, 4))).astype(np.float32)


def _reference(real: np.ndarray, reconstructed: np.ndarray) -> dict[str, float]:
    """var(real) - var(reconstructed) and the MSE, with numpy in float64."""
    x, y = (a.reshape(a.shape[0], -1).astype(np.float64) for a in (real, reconstructed))
    return {
        "variance_loss_reconstructed": float(x.var(0).mean() - y.var(0).mean()),
        "mse": float(((x - y) ** 2).mean()),
    }


def test_pythae_model_through_the_cli_equals_its_outputs_by_hand(
    pythae_folder, tmp_path, monkeypatch, capsys
):
    real = load("digits", "test").images
    np.save(tmp_path / "real.npy", real.numpy())
    code, out, err = invoke(
        monkeypatch, capsys, "measure", "--model", f"pythae:{pythae_folder}",
        "--real", str(tmp_path / "real.npy"), "--n-generated", "500", "--seed", "3",
        "--json", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    model = pythae_models.AutoModel.load_from_folder(str(pythae_folder)).eval()
    with torch.no_grad():
        reconstructed = model.decoder(model.encoder(real).embedding).reconstruction
        # the samples: N(0, I) codes, rows of seed 3's evaluation-code stream (index -1 of the
        # epoch-seed rule), drawn 256 rows at a time
        generator = torch.Generator().manual_seed(3 * 1_000_003 - 1 * 7919 + 17)
        codes = torch.cat([torch.randn(256, 4, generator=generator) for _ in range(2)])
        generated = model.decoder(codes[:500]).reconstruction
    expected = _reference(real.numpy(), reconstructed.numpy())
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, rel=1e-6, abs=1e-9)
    var_real = numpy_pixel_variance(real)
    assert report["var_generated"] == pytest.approx(numpy_pixel_variance(generated), rel=1e-6)
    assert report["variance_loss_generated"] == pytest.approx(
        var_real - numpy_pixel_variance(generated), rel=1e-6
    )
    assert expected["variance_loss_reconstructed"] > 0  # a trained VAE loses variance
    assert report["settings"]["adapter"]["kind"] == "pythae"
    print(f"\npythae VAE: variance loss {expected['variance_loss_reconstructed']:.6f}, "
          f"MSE {expected['mse']:.6f}", file=sys.stderr)  # fmt: skip


def test_autoencoder_kl_through_the_cli_equals_its_outputs_by_hand(
    diffusers_folder, tmp_path, monkeypatch, capsys
):
    real = colour_images()
    np.save(tmp_path / "real.npy", real)
    code, out, err = invoke(
        monkeypatch, capsys, "measure", "--model", f"diffusers:{diffusers_folder}",
        "--real", str(tmp_path / "real.npy"), "--json", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    model = diffusers.AutoencoderKL.from_pretrained(
        str(diffusers_folder), local_files_only=True, low_cpu_mem_usage=False
    )
    with torch.no_grad():  # by hand: [0, 1] -> [-1, 1], decode the posterior mean, clip, back
        mean = model.eval().encode(torch.from_numpy(real) * 2 - 1).latent_dist.mean
        reconstructed = ((model.decode(mean).sample.clamp(-1, 1) + 1) / 2).numpy()
    expected = _reference(real, reconstructed)
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, rel=1e-5, abs=1e-9)
    assert report["n_generated"] in (None, 0)  # reconstructions only, unless asked
    assert report["var_generated"] is None
    print(f"\nAutoencoderKL: variance loss {expected['variance_loss_reconstructed']:.6f}, "
          f"MSE {expected['mse']:.6f}", file=sys.stderr)  # fmt: skip
    # asked for: --n-generated draws prior samples (scaled latents ~ N(0, I))
    code, out, err = invoke(
        monkeypatch, capsys, "measure", "--model", f"diffusers:{diffusers_folder}",
        "--real", str(tmp_path / "real.npy"), "--n-generated", "20",
        "--json", str(tmp_path / "asked.json"),
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "asked.json").read_text())["n_generated"] == 20


def test_autoencoder_kl_scaling_and_batches(diffusers_folder):
    whole = load_adapter(f"diffusers:{diffusers_folder}")
    chunked = load_adapter(f"diffusers:{diffusers_folder}", batch_size=3)
    images = torch.from_numpy(colour_images(10))
    mu, logvar = whole.encode(images)
    assert mu.shape == logvar.shape == (10, 2, 8, 8)
    raw = whole.module.encode(images * 2 - 1).latent_dist
    factor = whole.module.config.scaling_factor
    torch.testing.assert_close(mu, raw.mean * factor)
    torch.testing.assert_close(logvar, raw.logvar + 2 * np.log(factor))
    torch.testing.assert_close(chunked.reconstruct(images), whole.reconstruct(images))
    assert not whole.generates_images and whole.value_range == (-1.0, 1.0)


def test_a_remedy_fitted_on_the_pythae_model_closes_part_of_its_gap(
    pythae_folder, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "fixed"
    code, stdout, err = invoke(
        monkeypatch, capsys, "correct", f"pythae:{pythae_folder}", "--dataset", "digits",
        "--method", "temperature,match", "--out", str(out), "--fid", "off", "--n-samples", "400",
        "--no-report",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    baseline = report["baseline"]
    assert baseline["var_real"] - baseline["var_generated"] > 0  # the prior's samples lose some
    closed = {name: row["gap_closed"] for name, row in report["methods"].items()}
    assert closed["match"] > 0.5 and closed["temperature"] > 0.2, closed
    assert report["settings"]["model"]["kind"] == "pythae"
    assert report["settings"]["dataset"] == "digits"


def test_correct_refuses_an_autoencoder_kl_and_a_model_without_data(
    diffusers_folder, pythae_folder, tmp_path, monkeypatch, capsys
):
    code, out, err = invoke(
        monkeypatch, capsys, "correct", f"diffusers:{diffusers_folder}", "--dataset", "digits",
        "--out", str(tmp_path / "a"),
    )  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "not meant to be images" in err and not (tmp_path / "a").exists()
    code, out, err = invoke(
        monkeypatch, capsys, "correct", f"pythae:{pythae_folder}", "--out", str(tmp_path / "b")
    )
    assert code == 2 and "does not name the training dataset" in err, err
    assert not (tmp_path / "b").exists()


def test_bad_model_inputs_are_one_sentence(pythae_folder, diffusers_folder, tmp_path, monkeypatch):
    cases = {
        "nope:somewhere": "unknown model prefix 'nope'; known: varloss, pythae, diffusers; or give",
        f"pythae:{tmp_path / 'missing'}": "does not exist",
        f"pythae:{diffusers_folder}": "is not a pythae model folder",
        f"diffusers:{pythae_folder}": "is not an AutoencoderKL folder",
        "diffusers:some-org/some-vae": "does not exist",  # a hub name is never looked up
        "pythae:": "names no folder",
    }
    for spec, fragment in cases.items():
        with pytest.raises(InputError, match=fragment):
            load_adapter(spec)
    monkeypatch.setitem(sys.modules, "pythae.models", None)  # the optional package missing
    with pytest.raises(InputError, match=r"needs the optional package pythae"):
        load_adapter(f"pythae:{pythae_folder}")


def test_a_deterministic_pythae_autoencoder_is_refused(tmp_path):
    model = pythae_models.AE(pythae_models.AEConfig(input_dim=(1, 8, 8), latent_dim=2))
    model.save(str(tmp_path / "ae"))
    with pytest.raises(InputError, match="pythae AE in .* is a deterministic auto-encoder"):
        load_adapter(f"pythae:{tmp_path / 'ae'}")


def test_varloss_models_go_through_the_same_path(tmp_path):
    model = untrained_vae()
    save_model(model, tmp_path / "run", extra={"train": {"dataset": "digits", "limit": 50}})
    adapter = load_adapter(tmp_path / "run")
    assert isinstance(adapter, VarlossAdapter) and adapter.dataset == "digits"
    assert adapter.dataset_limit == 50
    assert isinstance(as_adapter(model), VarlossAdapter) and as_adapter(adapter) is adapter
    real = load("digits", "test").images[:200]
    before = measure_model(model, real, n_generated=100, seed=1).to_dict()
    after = measure_model(adapter, real, n_generated=100, seed=1).to_dict()
    for key in ("var_real", "var_reconstructed", "var_generated", "mse", "cov_term"):
        assert after[key] == before[key]
    mu, logvar = adapter.encode(real)
    torch.testing.assert_close(mu, model.encode(real)[0])


PLUGIN = """
from varloss.models import load_model
from varloss.models.adapters import VarlossAdapter, register_adapter


class Mine(VarlossAdapter):
    kind = "mine"


register_adapter("mine", lambda path, device="cpu": Mine(load_model(path), source=path))
"""


def test_your_own_prefix_through_the_plugin_mechanism(tmp_path, monkeypatch):
    save_model(untrained_vae(), tmp_path / "model")
    plugin = tmp_path / "my_adapter.py"
    plugin.write_text(PLUGIN)
    monkeypatch.setenv(PLUGINS_ENV, str(plugin))
    try:
        adapter = load_adapter(f"mine:{tmp_path / 'model'}")
        assert adapter.kind == "mine" and adapter.latent_dim == 4
    finally:
        if "mine" in ADAPTERS:
            ADAPTERS.unregister("mine")


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_section_blocks() -> list[str]:
    """The code blocks of the README's "Your own model" section."""
    text = README.read_text()
    section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```[a-z]*\n(.*?)^```", section, flags=re.M | re.S)


@pytest.mark.slow
def test_the_readme_section_runs(pythae_folder, diffusers_folder, tmp_path, monkeypatch, capsys):
    """Its three commands and its Python, on the test's models and digits instead of MNIST."""
    images = tmp_path / "my_images"
    images.mkdir()
    for index, image in enumerate(colour_images(12)):
        Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(
            images / f"{index:02d}.png"
        )
    swaps = {
        "path/to/final_model": str(pythae_folder),
        "path/to/vae": str(diffusers_folder),
        "mnist": "digits",
        "my_images/": f"{images}/",
    }
    commands, python = readme_section_blocks()
    for name, value in swaps.items():
        commands, python = commands.replace(name, value), python.replace(name, value)
    monkeypatch.chdir(tmp_path)
    quick = ["--fid", "off", "--n-samples", "300", "--stage2-steps", "200", "--no-report"]
    lines = [line for line in commands.splitlines() if line.startswith("varloss ")]
    assert len(lines) == 3
    for line in lines:
        arguments = shlex.split(line)[1:]
        extra = quick if arguments[0] == "correct" else []
        code, out, err = invoke(monkeypatch, capsys, *arguments, *extra)
        assert code == 0, (line, err)
    assert (tmp_path / "maps.png").is_file() and (tmp_path / "fixed" / "report.json").is_file()
    assert json.loads((tmp_path / "report.json").read_text())["var_generated"] is None
    small = 'dataset="digits", fid="off", n_samples=300, progress=False, sampler_params=SMALL)'
    python = python.replace('dataset="digits")', small)
    namespace = {"SMALL": sampler_params(200, None, None)}
    exec(compile(python, "README.md", "exec"), namespace)
    assert namespace["images"].shape == (1000, 1, 8, 8)
    gaps = {row["method"]: row["gap_closed"] for row in namespace["report"]["table"]}
    assert set(gaps) == set(ALL_METHODS) and max(gaps.values()) > 0.5
