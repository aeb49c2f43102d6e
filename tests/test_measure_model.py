"""measure_model: a model's reconstructions and samples measured on the fly, equal to measuring
its saved outputs with `measure`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from varloss import measure, measure_model
from varloss.errors import InputError
from varloss.models import create_model

KEYS = ("var_real", "var_reconstructed", "var_generated", "mse", "bias2", "cov_term")


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return (load_digits().data / 16.0).reshape(-1, 1, 8, 8)


class PCAModel:
    """Another framework's model: numpy inside, torch tensors at the boundary."""

    def __init__(self, data: np.ndarray, k: int) -> None:
        self.pca = PCA(k, random_state=0).fit(data.reshape(len(data), -1))

    def reconstruct(self, x: torch.Tensor) -> np.ndarray:
        flat = x.reshape(len(x), -1).double().numpy()
        return self.pca.inverse_transform(self.pca.transform(flat)).reshape(x.shape)


def test_a_foreign_model_equals_measuring_its_outputs(digits: np.ndarray) -> None:
    model = PCAModel(digits, 10)
    ours = measure_model(model, digits, batch_size=100)
    outputs = model.reconstruct(torch.from_numpy(digits))
    reference = measure(digits, outputs)
    for key in ("var_real", "var_reconstructed", "mse", "bias2", "cov_term"):
        assert getattr(ours, key) == pytest.approx(getattr(reference, key), rel=1e-12)
    assert ours.var_generated is None
    assert ours.dims == [1, 8, 8]
    assert ours.settings["reconstructed_by"] == "PCAModel.reconstruct"
    assert ours.settings["inputs"]["real"].startswith("array")


def test_a_varloss_vae_samples_reproducibly_and_is_left_as_it_was(digits: np.ndarray) -> None:
    torch.manual_seed(0)
    model = create_model("dense", (1, 8, 8), 3, hidden_sizes=(16,))
    model.train()
    images = torch.from_numpy(digits).float()
    first = measure_model(model, images, n_generated=300, seed=3, batch_size=128)
    again = measure_model(model, images, n_generated=300, seed=3, batch_size=128)
    assert model.training  # restored
    assert {k: getattr(first, k) for k in KEYS} == {k: getattr(again, k) for k in KEYS}
    assert first.n_generated == 300 and first.n_reconstructed == len(images)
    # The same numbers from outputs computed here: decode(mu), and samples decoding the codes of
    # seed 3's evaluation-code stream (index -1 of the epoch-seed rule), drawn in blocks of 256.
    generator = torch.Generator().manual_seed(3 * 1_000_003 - 1 * 7919 + 17)
    codes = torch.cat([torch.randn(256, 3, generator=generator) for _ in range(2)])
    with torch.no_grad():
        model.eval()
        # In measure_model's batches of 256 (whatever batch_size): float32 BLAS results depend
        # on the batch size.
        reconstructed = torch.cat([model.reconstruct(b) for b in images.split(256)])
        samples = torch.cat([model.decode(codes[:256]), model.decode(codes[256:300])])
    reference = measure(images, reconstructed, samples)
    for key in KEYS:
        assert getattr(first, key) == pytest.approx(getattr(reference, key), rel=1e-12)
    other_seed = measure_model(model, images, n_generated=300, seed=4)
    assert other_seed.var_generated != first.var_generated
    # By default as many samples as real images.
    assert measure_model(model, images).n_generated == len(images)


def test_functions_instead_of_a_model(digits: np.ndarray) -> None:
    report = measure_model(None, digits, generate=lambda n: torch.rand(n, 1, 8, 8), n_generated=50)
    assert report.n_generated == 50 and report.var_reconstructed is None
    assert report.var_generated == pytest.approx(1 / 12, rel=0.2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": object()}, "neither reconstruct"),
        ({"model": None, "reconstruct": lambda x: x[:-1]}, "reconstructed has"),
        ({"model": None, "reconstruct": lambda x: x * float("nan")}, "NaN"),
        ({"model": None, "reconstruct": lambda x: x * 255}, "range"),
        ({"model": None, "generate": lambda n: torch.rand(n, 5)}, "generated samples have 5"),
        ({"model": None, "generate": lambda n: torch.rand(n, 64), "n_generated": 1}, "at least 2"),
    ],
)
def test_bad_models_raise_one_clear_sentence(digits: np.ndarray, kwargs, message: str) -> None:
    model = kwargs.pop("model")
    with pytest.raises(InputError, match=message):
        measure_model(model, digits, **kwargs)


def test_cli_measures_a_saved_model(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from varloss.cli import app
    from varloss.data import load
    from varloss.models import load_model, save_model

    torch.manual_seed(1)
    save_model(create_model("conv", (1, 8, 8), 4, base_channels=4, hidden=16), tmp_path / "m")
    args = ["measure", "--model", str(tmp_path / "m"), "--real", "digits:test"]
    args += ["--n-generated", "120", "--seed", "5", "--json", str(tmp_path / "r.json")]
    monkeypatch.setattr("sys.argv", ["varloss", *args])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "r.json").read_text())
    expected = measure_model(
        load_model(tmp_path / "m"), load("digits", "test").images, n_generated=120, seed=5
    )
    for key in KEYS:
        assert written[key] == pytest.approx(getattr(expected, key), rel=1e-12)
    assert written["n_generated"] == 120 and written["settings"]["model"] == "ConvVAE"
    both = CliRunner().invoke(app, [*args[:5], "--generated", "x.npy"])
    assert both.exit_code != 0 and "not both" in str(both.exception)
    alone = CliRunner().invoke(
        app, ["measure", "--real", "digits:test", "--generated", "x.npy", "--n-generated", "5"]
    )
    assert alone.exit_code != 0 and "only used with --model" in str(alone.exception)
