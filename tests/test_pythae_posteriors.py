"""pythae models measured as they decode, or refused: flow posteriors (VAE_IAF, VAE_LinNF) go
through their flow exactly as pythae's own forward pass does (same eps, same `recon_x`); models
whose codes varloss cannot draw are refused by name before anything is unpickled; a pythae
trainer's output folder is refused with the paths of the models it saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import invoke

from varloss.data import load
from varloss.errors import InputError
from varloss.models.adapters import load_adapter
from varloss.models.adapters.pythae import GAUSSIAN_POSTERIORS, POSTERIOR_FLOWS, REFUSED
from varloss.samplers import GMMSampler, TemperatureSampler, check_methods_fit
from varloss.variance import measure_model
from varloss.variance.protocol import NoiseStream, Stream

pythae_models = pytest.importorskip("pythae.models")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LATENT = 3


def flow_model(name: str) -> torch.nn.Module:
    """An untrained VAE_IAF or VAE_LinNF on 8 x 8 images (its flows are far from identity)."""
    torch.manual_seed(0)
    if name == "VAE_IAF":
        config = pythae_models.VAE_IAF_Config(input_dim=(1, 8, 8), latent_dim=LATENT)
        return pythae_models.VAE_IAF(config).eval()
    flows = ["Planar", "Radial", "Planar"]
    config = pythae_models.VAE_LinNF_Config(input_dim=(1, 8, 8), latent_dim=LATENT, flows=flows)
    return pythae_models.VAE_LinNF(config).eval()


def forward_with(model: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """pythae's own forward pass of `model` on x, its Gaussian draw made with the given eps."""
    model._sample_gauss = lambda mu, std: (mu + eps * std, eps)
    try:
        with torch.no_grad():
            return model({"data": x}).recon_x.reshape(x.shape)
    finally:
        del model._sample_gauss


@pytest.fixture(scope="module", params=sorted(POSTERIOR_FLOWS))
def flow_folder(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("flows") / request.param
    flow_model(request.param).save(str(folder))
    return folder


def test_a_flow_posterior_decodes_as_its_own_forward_pass(flow_folder):
    adapter = load_adapter(f"pythae:{flow_folder}")
    model = adapter.module
    x = load("digits", "test").images[:20]
    eps = torch.randn(20, LATENT, generator=torch.Generator().manual_seed(5))
    sampled = adapter.reconstruct(x, noise=eps)
    torch.testing.assert_close(sampled, forward_with(model, x, eps), rtol=0, atol=1e-6)
    # the mean protocol: flow(mu), pythae's forward pass with eps = 0
    torch.testing.assert_close(
        adapter.reconstruct(x), forward_with(model, x, torch.zeros(20, LATENT)), rtol=0, atol=1e-6
    )
    # without the flow the decoder would see other codes: the test can tell the difference
    mu, logvar = adapter.encode(x)
    assert (adapter.decode(mu + eps * torch.exp(0.5 * logvar)) - sampled).abs().max() > 1e-3
    assert adapter.posterior_note and model.model_name in adapter.posterior_note
    assert adapter.describe()["posterior_note"] == adapter.posterior_note


def test_measure_model_of_a_flow_posterior_equals_pythae_by_hand(flow_folder):
    """Sampled reconstructions use the reconstruction-draw stream's eps through the flow; the
    numbers equal numpy's on pythae's own forward pass with those eps."""
    adapter = load_adapter(f"pythae:{flow_folder}")
    real = load("digits", "test").images[:150]
    report = measure_model(adapter, real, reconstruction="sample", seed=4, batch_size=64)
    eps = NoiseStream.named(4, Stream.RECONSTRUCTION_DRAWS, LATENT).take(150)
    by_hand = forward_with(adapter.module, real, eps).numpy().reshape(150, -1).astype(np.float64)
    x = real.numpy().reshape(150, -1).astype(np.float64)
    assert report.var_reconstructed == pytest.approx(by_hand.var(0).mean(), rel=1e-6)
    assert report.mse == pytest.approx(((x - by_hand) ** 2).mean(), rel=1e-6)
    # prior samples: N(0, I) codes on z_K, decoded as they are (pythae's prior for these models)
    assert report.n_generated == 150 and adapter.generates_images


def test_samplers_that_fit_encoder_codes_are_refused_on_a_flow_posterior(flow_folder):
    adapter = load_adapter(f"pythae:{flow_folder}")
    images = load("digits", "train").images[:64]
    with pytest.raises(InputError, match=r"^gmm, two-stage cannot be fitted on .*flow"):
        check_methods_fit(["prior", "gmm", "two-stage", "temperature"], adapter)
    with pytest.raises(InputError, match="gmm cannot be fitted"):
        GMMSampler(n_components=2).fit(adapter, images)
    check_methods_fit(["prior", "temperature", "match"], adapter)  # prior codes: allowed
    fitted = TemperatureSampler(n_fit=64).fit(adapter, images)
    assert fitted.sample(8, torch.Generator().manual_seed(0)).shape == (8, 1, 8, 8)


def config_classes() -> dict[str, str]:
    """pythae's model config classes (the `name` model_config.json holds) -> the model's class
    name, read from pythae itself (its models and its normalizing flows)."""
    found = {}
    for module in (pythae_models, pytest.importorskip("pythae.models.normalizing_flows")):
        for name in dir(module):
            model_class = getattr(module, name)
            config_class = getattr(module, f"{name}Config", None) or getattr(
                module, f"{name}_Config", None
            )
            if isinstance(model_class, type) and config_class is not None:
                found[config_class.__name__] = name
    return found


def test_every_pythae_model_is_either_measured_or_refused_by_name(tmp_path):
    """A folder naming each pythae config (with weights that are not a model) is refused by
    name for a refused model before anything is read, and gets past the name check otherwise."""
    classes = config_classes()
    assert {"VAE_IAF_Config", "VAEConfig", "HVAEConfig", "VQVAEConfig"} <= set(classes)
    for config_name, model_name in classes.items():
        folder = tmp_path / config_name
        folder.mkdir()
        (folder / "model_config.json").write_text(json.dumps({"name": config_name}))
        (folder / "model.pt").write_bytes(b"not a model")
        with pytest.raises(InputError) as refused:
            load_adapter(f"pythae:{folder}")
        message = str(refused.value)
        if model_name in REFUSED:
            assert f"pythae {model_name} in {folder} cannot be measured right" in message
            assert REFUSED[model_name] in message
        elif model_name in GAUSSIAN_POSTERIORS | set(POSTERIOR_FLOWS):
            assert "pythae could not load the model" in message  # the name check passed
        else:  # pythae's abstract bases (BaseAE, BaseNF), and any model a later pythae adds
            assert f"pythae model {model_name!r} in {folder} is not one varloss knows" in message
    measured = {name for name in classes.values() if name not in REFUSED}
    assert measured - {"BaseAE", "BaseNF"} == GAUSSIAN_POSTERIORS | set(POSTERIOR_FLOWS)
    assert set(REFUSED) <= set(classes.values())


@pytest.mark.parametrize(
    ("model_name", "config"),
    [
        ("HVAE", {"n_lf": 1}),
        ("VQVAE", {}),
        ("SVAE", {}),
        ("AE", {}),
    ],
)
def test_real_pythae_models_varloss_cannot_measure_are_refused(model_name, config, tmp_path):
    config_class = getattr(pythae_models, f"{model_name}Config")
    model = getattr(pythae_models, model_name)(
        config_class(input_dim=(1, 8, 8), latent_dim=2, **config)
    )
    model.save(str(tmp_path / model_name))
    with pytest.raises(InputError, match=rf"^pythae {model_name} in .* cannot be measured right"):
        load_adapter(f"pythae:{tmp_path / model_name}")


@pytest.fixture(scope="module")
def trainer_output(tmp_path_factory) -> Path:
    """What pythae's own BaseTrainer writes: OUTPUT/VAE_training_<date>/{final_model,
    checkpoint_epoch_1, checkpoint_epoch_2} after two epochs on 64 images."""
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    torch.manual_seed(0)
    output = tmp_path_factory.mktemp("pythae_training")
    model = pythae_models.VAE(pythae_models.VAEConfig(input_dim=(1, 8, 8), latent_dim=2))
    settings = BaseTrainerConfig(
        output_dir=str(output), num_epochs=2, steps_saving=1, per_device_train_batch_size=32,
        per_device_eval_batch_size=32, no_cuda=True,
    )  # fmt: skip
    data = BaseDataset(load("digits", "train").images[:64], torch.zeros(64))
    BaseTrainer(model, train_dataset=data, training_config=settings).train()
    return output


def test_a_pythae_trainer_folder_names_its_final_model(trainer_output, tmp_path):
    (training,) = trainer_output.glob("VAE_training_*")
    final = training / "final_model"
    assert final.is_dir() and (training / "checkpoint_epoch_2").is_dir()
    for given in (trainer_output, training):
        with pytest.raises(InputError) as refused:
            load_adapter(f"pythae:{given}")
        message = str(refused.value)
        assert message.startswith(f"{given} is a pythae training folder, not a saved model")
        assert message.endswith(f"its model is in final_model/: pass pythae:{final}.")
    assert load_adapter(f"pythae:{final}").latent_dim == 2  # the named path loads
    # two trainings: both final models named; none finished: the checkpoints named
    second = tmp_path / "output"
    for index in (1, 2):
        (second / f"VAE_training_{index}").mkdir(parents=True)
        for part in ("final_model", "checkpoint_epoch_1"):
            target = second / f"VAE_training_{index}" / part
            target.mkdir()
            for file in ("model_config.json", "model.pt"):
                (target / file).write_bytes((final / file).read_bytes())
    with pytest.raises(InputError, match=r"pass one of pythae:\S+_1/final_model, pythae:\S+_2/fin"):
        load_adapter(f"pythae:{second}")
    for index in (1, 2):
        for file in ("model_config.json", "model.pt"):
            (second / f"VAE_training_{index}" / "final_model" / file).unlink()
    with pytest.raises(InputError, match=r"without a final_model/ .*_1/checkpoint_epoch_1, pyth"):
        load_adapter(f"pythae:{second}")


def test_correct_on_a_flow_posterior_fits_only_prior_code_remedies(
    flow_folder, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "fixed"
    common = ["correct", f"pythae:{flow_folder}", "--dataset", "digits", "--out", str(out)]
    code, _, err = invoke(monkeypatch, capsys, *common)  # all: two-stage, gmm fit encoder codes
    assert code == 2 and not out.exists(), err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "two-stage-spherical, gmm cannot be fitted on" in err, err
    quick = ["--method", "temperature", "--fid", "off", "--n-samples", "200", "--no-report"]
    code, _, err = invoke(monkeypatch, capsys, *common, *quick)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {"prior", "temperature"}
    assert report["methods"]["temperature"]["var_generated"] > 0


def test_vamp_samples_its_vamp_prior_and_correct_refuses_it(tmp_path, monkeypatch, capsys):
    """VAMP's prior codes are draws of the mixture of its encoder's posteriors at the pseudo-
    inputs: with the posteriors made nearly exact (log-variance -30), every code is one of the
    components' means, each chosen about equally often; correct's remedies draw N(0, I) codes
    and refuse it."""
    torch.manual_seed(0)
    config = pythae_models.VAMPConfig(input_dim=(1, 8, 8), latent_dim=2, number_components=4)
    model = pythae_models.VAMP(config)
    with torch.no_grad():
        model.encoder.log_var.weight.zero_()
        model.encoder.log_var.bias.fill_(-30.0)
    model.save(str(tmp_path / "vamp"))
    adapter = load_adapter(f"pythae:{tmp_path / 'vamp'}")
    assert adapter.generates_images and "VampPrior" in adapter.prior_note
    with torch.no_grad():
        pseudo = model.pseudo_inputs(model.idle_input).reshape(4, 1, 8, 8)
        means = model.encoder(pseudo).embedding  # the components' means, by pythae itself
        codes = adapter._prior_codes(4000, torch.Generator().manual_seed(1), torch.device("cpu"))
    exact = "donot_use_mm_for_euclid_dist"  # (the matrix-product shortcut errs by ~1e-4)
    distance, nearest = torch.cdist(codes, means, compute_mode=exact).min(dim=1)
    assert distance.max() < 1e-5
    counts = torch.bincount(nearest, minlength=4)
    assert ((counts - 1000).abs() < 150).all(), counts  # equal weights: 1000 +- 5 sd each
    images = adapter.sample(6, torch.Generator().manual_seed(1))
    by_hand = model.decoder(codes[:6]).reconstruction.detach().reshape(6, 1, 8, 8)
    torch.testing.assert_close(images, by_hand)  # the same components chosen, decoded
    out = tmp_path / "fixed"
    code, _, err = invoke(
        monkeypatch, capsys, "correct", f"pythae:{tmp_path / 'vamp'}", "--dataset", "digits",
        "--method", "gmm", "--out", str(out),
    )  # fmt: skip
    assert code == 2 and not out.exists(), err
    assert "prior cannot be fitted on" in err and "N(0, I) prior codes" in err, err
