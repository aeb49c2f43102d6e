"""The reconstruction protocol: `mean` (decode(mu)) against `sample` (one seeded posterior draw per
image), for a dense and the iterative families, through the model, measure_model, train's
evaluation, the CLI and the study spec."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from varloss import measure, measure_model
from varloss._hashing import sha256_json
from varloss.data import load
from varloss.errors import InputError
from varloss.models import create_model
from varloss.pipelines.evaluate import evaluate
from varloss.pipelines.study.spec import parse_spec
from varloss.train_config import TrainConfig
from varloss.variance.protocol import NOISE_BLOCK, NoiseStream

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILIES = {
    "dense": {"hidden_sizes": (16,)},
    "draw": {"steps": 2, "hidden": 16},
    "convdraw": {"steps": 2, "hidden_channels": 4, "canvas_channels": 4, "feature_channels": 4},
}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(load_digits().data[:200] / 16.0).float().reshape(-1, 1, 8, 8)


def _model(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(family, (1, 8, 8), 4, **FAMILIES[family]).eval()
    with torch.no_grad():  # a spread-out posterior: sigma = exp(0.5) about 1.6, not about 1
        _logvar_head(model)[1].add_(1.0)
    return model


def _logvar_head(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) rows of the layer that outputs log-variances."""
    if model.family == "dense":
        return model.to_logvar.weight, model.to_logvar.bias
    half = model.to_posterior.weight.shape[0] // 2  # posterior.chunk(2): mu, then logvar
    return model.to_posterior.weight[half:], model.to_posterior.bias[half:]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sample_is_mean_at_zero_sigma_and_differs_otherwise(
    family: str, images: torch.Tensor
) -> None:
    model = _model(family)
    noise = torch.randn(len(images), 4, generator=torch.Generator().manual_seed(1))
    mean = model.reconstruct(images)
    sampled = model.reconstruct(images, noise)
    assert (sampled - mean).abs().max() > 1e-3  # sigma about 1.6: other images (1e-6: same)
    assert torch.equal(model.reconstruct(images, noise), sampled)  # the draws decide
    with torch.no_grad():  # sigma = exp(0.5 * -inf) = 0: mu + 0 * eps is mu, exactly
        weight, bias = _logvar_head(model)
        weight.zero_()
        bias.fill_(-float("inf"))
    assert torch.allclose(model.reconstruct(images, noise), model.reconstruct(images), atol=1e-6)


@pytest.mark.parametrize("family", ["draw", "convdraw"])
def test_iterative_families_sample_along_their_own_path_as_in_training(
    family: str, images: torch.Tensor
) -> None:
    model = _model(family)
    with torch.no_grad():  # larger weights: each step's posterior depends visibly on the last
        for parameter in model.parameters():
            parameter.mul_(3.0)
    x = images[:50]
    torch.manual_seed(7)
    trained_view = model(x).x_hat.detach()  # forward: one randn_like per step, in order
    torch.manual_seed(7)
    steps = model.steps
    noise = torch.cat([torch.randn(50, 4 // steps) for _ in range(steps)], dim=1)
    assert torch.allclose(model.reconstruct(x, noise), trained_view, atol=1e-6)
    # Not decode(mu + sigma * eps) of the deterministic path: step t's posterior depends on
    # the codes drawn before it.
    mu, logvar = model.encode(x)
    shortcut = model.decode(mu + noise * torch.exp(0.5 * logvar)).detach()
    assert (shortcut - trained_view).abs().max() > 1e-3  # 1000 x the tolerance above


@pytest.mark.parametrize("family", ["dense", "draw"])
def test_measure_model_samples_reproducibly_under_a_recorded_seed(
    family: str, images: torch.Tensor
) -> None:
    model = _model(family)
    first = measure_model(model, images, reconstruction="sample", seed=5, batch_size=64)
    again = measure_model(model, images, reconstruction="sample", seed=5, batch_size=64)
    other = measure_model(model, images, reconstruction="sample", seed=6, batch_size=64)
    mean = measure_model(model, images, seed=5, batch_size=64)
    keys = ("var_reconstructed", "mse", "bias2", "cov_term")
    assert [getattr(first, k) for k in keys] == [getattr(again, k) for k in keys]
    assert first.var_reconstructed != other.var_reconstructed
    assert first.mse > mean.mse  # a posterior draw is a worse reconstruction than its mean
    assert first.settings["reconstruction"] == "sample"
    # the reconstruction-draw stream of seed 5, by the one rule (not the samples' codes)
    draw_seed = (5 * 1_000_003 - 2 * 7919 + 17) % (2**63 - 1)
    assert first.settings["reconstruction_seed"] == draw_seed
    assert mean.settings["reconstruction"] == "mean"
    assert mean.settings["reconstruction_seed"] is None
    # The same numbers from draws made here: one row of that stream per image, in order,
    # the stream drawn NOISE_BLOCK rows at a time.
    generator = torch.Generator().manual_seed(draw_seed)
    blocks = -(-len(images) // NOISE_BLOCK)
    noise = torch.cat([torch.randn(NOISE_BLOCK, 4, generator=generator) for _ in range(blocks)])
    # The model reconstructs NOISE_BLOCK images at a time, whatever batch_size.
    with torch.no_grad():
        blocks = zip(images.split(NOISE_BLOCK), noise.split(NOISE_BLOCK), strict=False)
        reconstructed = torch.cat([model.reconstruct(b, eps[: len(b)]) for b, eps in blocks])
    reference = measure(images, reconstructed)
    assert first.mse == pytest.approx(reference.mse, rel=1e-12)
    assert first.var_reconstructed == pytest.approx(reference.var_reconstructed, rel=1e-12)
    # Image i gets the same draw in batches of any size, in the same model batches: the same
    # numbers, and so for the generated samples.
    odd = measure_model(model, images, reconstruction="sample", seed=5, batch_size=37)
    for key in (*keys, "var_generated"):
        assert getattr(odd, key) == pytest.approx(getattr(first, key), rel=1e-12), key


def test_bad_protocols_are_one_sentence(images: torch.Tensor) -> None:
    model = _model("dense")
    with pytest.raises(InputError, match="reconstruction must be one of mean, sample"):
        measure_model(model, images, reconstruction="median")
    with pytest.raises(InputError, match="reconstruct= function"):
        measure_model(model, images, reconstruction="sample", reconstruct=model.reconstruct)

    class Foreign:
        latent_dim = 4

        def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(InputError, match="reconstruct\\(x, noise\\)"):
        measure_model(Foreign(), images, reconstruction="sample")
    with pytest.raises(InputError, match="one draw per image"):
        model.reconstruct(images, torch.zeros(3, 4))
    with pytest.raises(InputError, match="reconstruction must be one of"):
        TrainConfig(reconstruction="posterior").validate()


def test_train_evaluation_records_the_protocol_and_its_seed() -> None:
    model = _model("dense")
    config = TrainConfig(dataset="digits", latent=4, seed=2, eval_limit=200, fid="off")
    mean = evaluate(model, config)
    config.reconstruction = "sample"
    sampled = evaluate(model, config)
    again = evaluate(model, config)
    assert mean["settings"]["evaluation"]["reconstruction"] == "mean"
    recorded = sampled["settings"]["evaluation"]
    assert recorded["reconstruction"] == "sample" and isinstance(
        recorded["reconstruction_seed"], int
    )
    assert sampled["mse"] == again["mse"] and sampled["mse"] > mean["mse"]
    assert sampled["var_generated"] == mean["var_generated"]  # the prior samples are untouched
    # decode(mu) is what it was before the protocol existed.
    digits = load("digits", "test", limit=200).images
    with torch.no_grad():
        expected = (model.reconstruct(digits).double() - digits.double()).pow(2).mean().item()
    assert mean["mse"] == pytest.approx(expected, rel=1e-5)


def test_resuming_a_finished_run_with_the_other_protocol_measures_it_again(tmp_path) -> None:
    from varloss.pipelines.train import train

    values = dict(family="dense", dataset="digits", epochs=2, latent=2, limit=200, eval_limit=100)
    values.update(batch_size=50, fid="off", hyper={"hidden_sizes": [16]}, out=str(tmp_path / "r"))
    first = train(TrainConfig(**values), progress=False)
    weights = (tmp_path / "r" / "model.safetensors").read_bytes()
    again = train(TrainConfig(**values, reconstruction="sample"), resume=True, progress=False)
    assert again["settings"]["evaluation"]["reconstruction"] == "sample"
    assert again["history"] == first["history"]  # nothing trained
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == weights
    assert again["mse"] != first["mse"]
    # and back: the finished run is measured with `mean` again, as the first time
    back = train(TrainConfig(**values), resume=True, progress=False)
    assert back["mse"] == first["mse"] and back["history"] == first["history"]


def test_study_specs_take_the_protocol_and_keep_earlier_run_ids() -> None:
    base = {"family": "dense", "dataset": "digits", "latent": 2, "epochs": 1}
    plain = parse_spec({"runs": [base]}).runs[0]
    explicit_mean = parse_spec({"runs": [{**base, "reconstruction": "mean"}]}).runs[0]
    sampled = parse_spec({"runs": [{**base, "reconstruction": "sample"}]}).runs[0]
    # The id as it was computed before the field existed: the same settings, hashed.
    before = {**base, "loss": "bernoulli", "seed": 0, "limit": None, "batch_size": None}
    digest = sha256_json({**before, "lr": None, "hyper": {}}, 8)
    assert plain.run_id == explicit_mean.run_id == f"dense-digits-z2-e1-bernoulli-s0-{digest}"
    assert sampled.run_id != plain.run_id
    assert sampled.train_config(out="x").reconstruction == "sample"
    with pytest.raises(InputError, match="reconstruction must be one of"):
        parse_spec({"runs": [{**base, "reconstruction": "both"}]})


def test_cli_measure_and_train_take_the_protocol(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from varloss.cli import app
    from varloss.models import load_model, save_model
    from varloss.runs import REPORT_FILE, RunFolder

    save_model(_model("dense"), tmp_path / "m")
    args = ["measure", "--model", str(tmp_path / "m"), "--real", "digits:test", "--seed", "2"]
    args += ["--reconstruction", "sample", "--json", str(tmp_path / "r.json")]
    monkeypatch.setattr("sys.argv", ["varloss", *args])
    assert CliRunner().invoke(app, args).exit_code == 0
    written = RunFolder(tmp_path).read_json("r.json")
    images = load("digits", "test").images
    expected = measure_model(load_model(tmp_path / "m"), images, seed=2, reconstruction="sample")
    assert written["mse"] == pytest.approx(expected.mse, rel=1e-12)
    assert written["settings"]["reconstruction"] == "sample"
    assert written["settings"]["reconstruction_seed"] == (2 * 1_000_003 - 2 * 7919 + 17)
    files = ["measure", "--real", "digits:test", "--generated", "x.npy"]
    alone = CliRunner().invoke(app, [*files, "--reconstruction", "sample"])
    assert alone.exit_code != 0 and "only used with --model" in str(alone.exception)
    # The README's command, small.
    out = tmp_path / "chollet"
    args = ["train", "--family", "dense", "--dataset", "digits", "--epochs", "1", "--latent", "2"]
    args += ["--reconstruction", "sample", "--out", str(out), "--limit", "200"]
    args += ["--eval-limit", "100", "-q", "--no-report", "--fid", "off"]
    monkeypatch.setattr("sys.argv", ["varloss", *args])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    settings = RunFolder(out).read_json(REPORT_FILE)["settings"]
    assert settings["train"]["reconstruction"] == "sample"
    assert settings["evaluation"]["reconstruction"] == "sample"
    bad = CliRunner().invoke(app, [*args, "--reconstruction", "mode", "--force"])
    assert bad.exit_code != 0 and "reconstruction must be one of" in str(bad.exception)


def test_noise_stream_rows_do_not_depend_on_how_they_are_asked_for() -> None:
    whole = NoiseStream(3, 5).take(2 * NOISE_BLOCK + 50)
    stream = NoiseStream(3, 5)
    pieces = torch.cat([stream.take(n) for n in (1, NOISE_BLOCK + 7, 0, 99, NOISE_BLOCK - 57)])
    assert torch.equal(whole, pieces)
    assert not torch.equal(whole, NoiseStream(4, 5).take(2 * NOISE_BLOCK + 50))
