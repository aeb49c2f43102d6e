"""Your own architectures: a family registered in a plugin module trains, saves, loads, is
measured and runs in a study (also in worker processes), like the built-in ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from varloss.errors import InputError
from varloss.figures import FAMILY_COLOURS, family_colour
from varloss.models import (
    MODEL_FAMILIES,
    create_model,
    load_model,
    load_plugins,
    registry,
    save_model,
)
from varloss.pipelines.study import run_study

PLUGIN = '''
"""A user's own VAE family, outside the varloss package."""
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from varloss.models import VAE, ModelConfig, register


@dataclass
class TinyConfig(ModelConfig):
    family: ClassVar[str] = "tiny"
    width: int = 32


@register
class TinyVAE(VAE):
    config_class = TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        pixels = 1
        for side in self.image_shape:
            pixels *= side
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, config.width), nn.ReLU())
        self.to_stats = nn.Linear(config.width, 2 * self.latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(self.latent_dim, config.width), nn.ReLU(), nn.Linear(config.width, pixels)
        )

    def encode(self, x):
        self.check_images(x)
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar

    def decode_logits(self, z):
        self.check_codes(z)
        return self.decoder(z).view(-1, *self.image_shape)
'''


@pytest.fixture
def plugin_file(tmp_path: Path):
    """The plugin as a .py file; the registry is restored afterwards."""
    path = tmp_path / "tiny_models.py"
    path.write_text(PLUGIN)
    families, imported = dict(MODEL_FAMILIES), set(registry._imported_plugins)
    yield path
    for name in MODEL_FAMILIES.names():
        if name not in families:
            MODEL_FAMILIES.unregister(name)
    for name, cls in families.items():
        MODEL_FAMILIES.register(name, cls, replace=True)
    registry._imported_plugins.clear()
    registry._imported_plugins.update(imported)


def _varloss(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "VARLOSS_PLUGINS"}
    environment.update({"OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "varloss", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def test_a_plugin_family_builds_trains_and_round_trips(plugin_file: Path, tmp_path: Path) -> None:
    assert "tiny" not in MODEL_FAMILIES
    with pytest.raises(InputError, match="VARLOSS_PLUGINS"):
        create_model("tiny", (1, 8, 8), 2)
    load_plugins([str(plugin_file)])
    model = create_model("tiny", (1, 8, 8), 2, width=16)
    assert model.config.loss == "bernoulli" and model.config.width == 16
    x = torch.rand(10, 1, 8, 8)
    terms = model(x)
    terms.loss.backward()
    assert torch.isfinite(terms.loss) and model.decode(torch.zeros(3, 2)).shape == (3, 1, 8, 8)
    save_model(model, tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    torch.testing.assert_close(loaded.reconstruct(x), model.eval().reconstruct(x))


def test_bad_plugins_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'no_such_module_xyz' could not be imported"):
        load_plugins(["no_such_module_xyz"])
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(InputError, match="broken.py' could not be imported .*boom"):
        load_plugins([str(broken)])


@pytest.mark.slow
def test_cli_train_then_measure_with_the_plugin(plugin_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = _varloss(
        "--plugin", str(plugin_file), "train", "--family", "tiny", "--dataset", "digits",
        "--epochs", "2", "--latent", "2", "--limit", "300", "--out", str(run), "-q",
        "--no-report", "--fid", "off",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert json.loads((run / "config.json").read_text())["family"] == "tiny"
    # A new process without the plugin cannot rebuild the model, and says how to fix it.
    missing = _varloss("measure", "--model", str(run), "--real", "digits:test")
    assert missing.returncode != 0 and "VARLOSS_PLUGINS" in missing.stderr
    measured = _varloss(
        "measure", "--model", str(run), "--real", "digits:test", "--json", str(tmp_path / "m.json"),
        env={"VARLOSS_PLUGINS": str(plugin_file)},
    )  # fmt: skip
    assert measured.returncode == 0, measured.stderr
    numbers = json.loads((tmp_path / "m.json").read_text())
    report = json.loads((run / "report.json").read_text())
    assert numbers["var_reconstructed"] == pytest.approx(report["var_reconstructed"], rel=1e-9)


@pytest.mark.slow
def test_a_study_of_a_plugin_family_in_worker_processes(plugin_file: Path, tmp_path: Path) -> None:
    spec = tmp_path / "mine.yaml"
    spec.write_text(
        f"name: mine\nplugins: [{plugin_file}]\n"
        "defaults: {dataset: digits, latent: 2, epochs: 2, limit: 300, batch_size: 50}\n"
        "grid: {family: [tiny, dense], seed: [0]}\n"
        "hyper: {tiny: {width: 24}, dense: {hidden_sizes: [32]}}\n"
    )
    result = run_study(spec, tmp_path / "study", jobs=2, progress=False)  # spawned processes
    assert not result.failed, result.failed
    assert sorted(row.family for row in result.rows) == ["dense", "tiny"]
    assert (tmp_path / "study" / "figure.png").stat().st_size > 0
    # A family of one's own gets a colour of its own in the figure, the same in every study
    # (every process: not Python's salted hash()).
    assert family_colour("tiny") not in FAMILY_COLOURS.values()
    assert family_colour("dense") == FAMILY_COLOURS["dense"]
    elsewhere = subprocess.run(
        [sys.executable, "-c", "from varloss.figures import family_colour as f; print(f('tiny'))"],
        capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "7"}, check=True,
    )  # fmt: skip
    assert elsewhere.stdout.strip() == family_colour("tiny")
