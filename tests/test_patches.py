"""The `patches` data set: colour photographs shipped in packages, cut as documented, pinned,
described, and trainable by every model family."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from varloss.data import DATASETS, info, load
from varloss.data import patches as patches_module
from varloss.data.loading import dataset_status
from varloss.data.patches import SPLIT_STREAMS, photograph_file, photograph_patches
from varloss.errors import InputError
from varloss.models import MODEL_FAMILIES, create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENTRY = DATASETS["patches"]


@pytest.fixture(scope="module")
def train_patches() -> torch.Tensor:
    return load("patches", "train").images


def _recipe(split: str, count: int, seed: int = 0, side: int = 32) -> np.ndarray:
    """The documented recipe, written out with plain loops and slices: an equal share per
    photograph of the split (first ones one more), top rows, left columns and flips drawn in
    that order from default_rng((seed, split stream)), then the split shuffled."""
    chosen = [p for p in ENTRY.photographs if p.split == split]
    generator = np.random.default_rng((seed, SPLIT_STREAMS[split]))
    out = []
    for index, photograph in enumerate(chosen):
        share = count // len(chosen) + (1 if index < count % len(chosen) else 0)
        path = photograph_file(photograph, "patches")
        pixels = np.asarray(Image.open(path).convert("RGB"))  # H x W x 3
        height, width, _ = pixels.shape
        tops = generator.integers(0, height - side + 1, size=share)
        lefts = generator.integers(0, width - side + 1, size=share)
        flips = generator.random(share) < 0.5
        for top, left, flip in zip(tops, lefts, flips, strict=True):
            crop = pixels[top : top + side, left : left + side].transpose(2, 0, 1)
            out.append(crop[:, :, ::-1] if flip else crop)
    stacked = np.stack(out)
    return stacked[generator.permutation(len(stacked))]


def test_entry_pins_every_photograph_and_keeps_the_splits_apart() -> None:
    assert ENTRY.shape == (3, 32, 32) and ENTRY.classes is None and ENTRY.seed == 0
    train = {p.path for p in ENTRY.photographs if p.split == "train"}
    test = {p.path for p in ENTRY.photographs if p.split == "test"}
    assert len(train) == 6 and len(test) == 2 and not train & test
    for photograph in ENTRY.photographs:  # the pin is the file's own SHA-256
        path = photograph_file(photograph, "patches")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == photograph.sha256


def test_patches_follow_the_documented_recipe(train_patches: torch.Tensor) -> None:
    test = load("patches", "test")
    assert test.images.shape == (5000, 3, 32, 32) and test.labels is None
    expected = _recipe("test", 5000)
    as_float = expected.astype(np.float32) / np.float32(255)  # the converter's k/255
    np.testing.assert_array_equal(test.images.numpy(), as_float)
    assert train_patches.shape == (20000, 3, 32, 32) and train_patches.dtype == torch.float32
    # the first 300 training patches against the recipe's (all 20000 drawn, as the loader does)
    first = _recipe("train", 20000)[:300].astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(train_patches[:300].numpy(), first)
    # a limited load is the first N of the full split; another seed gives other patches
    np.testing.assert_array_equal(load("patches", "test", limit=7).images.numpy(), as_float[:7])
    other = photograph_patches(ENTRY.photographs, "test", 50, 32, 1, "patches")
    assert not np.array_equal(other, expected[:50])


def test_a_changed_photograph_or_a_missing_package_is_one_sentence(monkeypatch) -> None:
    photograph = ENTRY.photographs[0]
    wrong = dataclasses.replace(photograph, sha256="0" * 64)
    with pytest.raises(InputError, match=r"has SHA-256 [0-9a-f]{16}\.\.\., not the pinned 0{16}"):
        photograph_patches([wrong], "train", 4, 32, 0, "patches")
    absent = dataclasses.replace(photograph, package="no_such_package_here")
    with pytest.raises(
        InputError, match=r"no_such_package_here package, which is not installed; pip install "
    ):
        photograph_patches([absent], "train", 4, 32, 0, "patches")
    # without scikit-image, `data list` says the set is not had offline, `info` says why
    monkeypatch.setattr(
        patches_module, "_package_folder", lambda package: None if package == "skimage" else 1
    )
    rows = {row["name"]: row for row in dataset_status()}
    assert rows["patches"]["offline"] == "no" and rows["digits"]["offline"] == "bundled"


def test_info_says_what_it_is_with_the_digests_of_the_patches() -> None:
    from typer.testing import CliRunner

    from varloss.cli import app

    described = info("patches")
    assert described["available"] and described["seed"] == 0
    assert "not CIFAR-10" in described["description"]
    assert [p["name"] for p in described["photographs"]["test"]] == ["flower", "chelsea"]
    test = load("patches", "test").images
    as_bytes = np.round(test.numpy() * 255).astype(np.uint8)  # the loader's uint8, recovered
    assert described["splits"]["test"] == {
        "count": 5000,
        "sha256": hashlib.sha256(as_bytes.tobytes()).hexdigest(),
    }
    runner = CliRunner()
    text = runner.invoke(app, ["data", "info", "patches", "--no-fetch"])
    assert text.exit_code == 0, text.output
    assert "not CIFAR-10" in text.stdout and "test from flower (sklearn/" in text.stdout
    payload = json.loads(runner.invoke(app, ["data", "info", "patches", "--json"]).stdout)
    assert payload["splits"]["train"]["count"] == 20000


SMALL: dict[str, dict] = {
    "dense": {"hidden_sizes": (128,)},
    "conv": {"base_channels": 8, "hidden": 64},
    "resnet": {"base_channels": 8, "max_channels": 16},
    "draw": {"hidden": 64, "steps": 4},
    "convdraw": {"hidden_channels": 8, "canvas_channels": 8, "feature_channels": 8, "steps": 4},
}
CASES = [(family, {}, None) for family in SMALL] + [
    ("draw", {"read_attention": True, "write_attention": True}, None),  # attention on colour
    ("conv", {}, "sigma"),
]


@pytest.mark.parametrize(("family", "extra", "loss"), CASES)
def test_every_family_trains_on_patches(
    family: str, extra: dict, loss: str | None, train_patches: torch.Tensor
) -> None:
    """One batch forward and backward reaches every parameter; 25 steps lower the loss."""
    assert sorted(SMALL) == sorted(MODEL_FAMILIES)
    torch.manual_seed(0)
    x = train_patches[:32]
    model = create_model(family, (3, 32, 32), 8, loss=loss, **SMALL[family], **extra)
    model.train()
    terms = model(x)
    assert terms.x_hat.shape == x.shape and math.isfinite(terms.loss.item())
    terms.loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())

    def evaluated() -> float:
        model.eval()
        torch.manual_seed(7)
        with torch.no_grad():
            value = model(x).mse.item()
        model.train()
        return value

    before = evaluated()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(25):
        optimizer.zero_grad()
        model(x).loss.backward()
        optimizer.step()
    assert evaluated() < 0.9 * before


def test_a_study_varies_the_loss_on_patches() -> None:
    from varloss.pipelines.study import parse_spec

    grid = {"family": "conv", "dataset": "patches", "latent": 8, "epochs": 1}
    spec = parse_spec({"grid": {**grid, "loss": ["learned-gamma", "balanced", "sigma"]}})
    assert [r.loss for r in spec.runs] == ["learned-gamma", "balanced", "sigma"]
    assert spec.runs[2].run_id.startswith("conv-patches-z8-e1-sigma-s0-")
    assert spec.runs[2].train_config(out="x").loss == "sigma"
