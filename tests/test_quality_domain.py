"""The domain-classifier path on sklearn digits (a few hundred images, short training), and CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from varloss.data import load
from varloss.errors import InputError
from varloss.quality import (
    DomainExtractor,
    domain_extractor_available,
    fid,
    get_extractor,
    load_domain_classifier,
    train_domain_classifier,
)
from varloss.quality.domain import architecture_for, default_domain_folder


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("domain")
    folder = train_domain_classifier(
        "digits", epochs=6, limit=400, batch_size=50, seed=0, out_dir=root / "a", progress=False
    )
    return root, folder


def test_training_is_cached_deterministic_and_recorded(tiny_classifier) -> None:
    root, folder = tiny_classifier
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["settings"]["architecture"] == "tiny-cnn"
    assert meta["settings"]["epochs"] == 6 and meta["settings"]["seed"] == 0
    assert meta["n_train"] == 400 and meta["n_test"] == 297
    assert 0.5 < meta["test_accuracy"] <= 1.0  # 48 steps already beat chance (0.1) by far
    train = load("digits", "train", limit=400)
    expected = hashlib.sha256(
        train.images.float().numpy().tobytes() + train.labels.long().numpy().tobytes()
    )
    assert meta["data_hash"] == expected.hexdigest()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = train_domain_classifier(
        "digits", epochs=6, limit=400, batch_size=50, seed=0, out_dir=folder, progress=False
    )
    assert again == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    twin = train_domain_classifier(
        "digits", epochs=6, limit=400, batch_size=50, seed=0, out_dir=root / "b", progress=False
    )
    assert json.loads((twin / "meta.json").read_text())["weights_sha256"] == meta["weights_sha256"]


def test_domain_extractor_features_and_fid(tiny_classifier, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    _, folder = tiny_classifier
    extractor = get_extractor("domain", weights=folder)
    assert isinstance(extractor, DomainExtractor)
    info = extractor.info()
    assert info["name"] == "domain:digits:tiny-cnn"
    assert info["feature_dim"] == 64 and info["test_accuracy"] is not None
    model, _ = load_domain_classifier(folder / "model.safetensors")
    test = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.features(test).double()
    assert torch.allclose(extractor.features(test), expected)
    same = fid("digits:test", "digits:test", features="domain", weights=folder)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    blurred = fid("digits:test", np.full((297, 1, 8, 8), 0.3), features="domain", weights=folder)
    # a constant image has zero feature covariance: FD = |mu_r - mu_g|^2 + Tr S_real exactly
    terms = blurred["terms"]
    assert blurred["trace_ratio"] == 0.0 and terms["cross_term"] == pytest.approx(0.0, abs=1e-9)
    assert blurred["fid"] == pytest.approx(terms["mean_term"] + terms["trace_real"], rel=1e-9)
    assert blurred["fid"] > 0.1
    assert blurred["settings"]["real"] == {"dataset": "digits", "split": "test"}
    assert blurred["n_real"] == 297
    with pytest.raises(InputError, match=r"\[1, 8, 8\]"):
        fid(torch.rand(20, 1, 9, 9), torch.rand(20, 1, 9, 9), features="domain", weights=folder)


def test_availability_check_and_architecture_choice(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    assert not domain_extractor_available("digits")
    assert not domain_extractor_available("no-such-set")
    folder = default_domain_folder("digits")
    assert folder.parent == tmp_path / "domain-classifiers"
    with pytest.raises(InputError, match="no cached domain classifier"):
        get_extractor("domain", dataset="digits", train=False)
    assert architecture_for((1, 28, 28)) == "lenet"
    assert architecture_for((3, 32, 32)) == "small-resnet"
    assert architecture_for((3, 64, 64)) == "small-resnet"
    assert architecture_for((1, 8, 8)) == "tiny-cnn"


def test_small_resnet_shapes() -> None:
    from varloss.quality.domain_classifiers import SmallResNet

    for size in (32, 64):
        net = SmallResNet(3, size, 10)
        x = torch.rand(2, 3, size, size)
        assert net.features(x).shape == (2, 128) and net(x).shape == (2, 10)


def test_fid_cli_writes_json(tiny_classifier, tmp_path, monkeypatch) -> None:
    from varloss.cli import app

    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    _, folder = tiny_classifier
    samples = np.clip(np.random.default_rng(0).normal(0.3, 0.2, size=(297, 1, 8, 8)), 0, 1)
    np.save(tmp_path / "samples.npy", samples.astype(np.float32))
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        [
            "fid",
            "--real",
            "digits:test",
            "--generated",
            str(tmp_path / "samples.npy"),
            "--weights",
            str(folder),
            "--prdc",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    direct = fid("digits:test", samples.astype(np.float32), features="domain", weights=folder)
    assert saved["fid"] == pytest.approx(direct["fid"], rel=1e-12)
    assert saved["fid"] > 0 and 0 <= saved["precision"] <= 1 and 0 <= saved["coverage"] <= 1
    assert "FID (domain:digits" in result.output


@pytest.mark.slow
def test_small_resnet_classifier_learns_colour_images(tmp_path) -> None:
    """The CIFAR/CelebA-sized path (3 x 32 x 32, small ResNet): trained through the same code on
    a synthetic labelled set (class = colour of a noisy blob), then usable as FID features."""
    from varloss.data.imageset import ImageSet

    palette = torch.rand(10, 3, 1, 1, generator=torch.Generator().manual_seed(5))

    def loader(name: str, split: str, limit: int | None = None) -> ImageSet:
        n = 300 if split == "train" else 200
        generator = torch.Generator().manual_seed(0 if split == "train" else 1)
        labels = torch.randint(0, 10, (n,), generator=generator)
        noise = 0.15 * torch.rand(n, 3, 32, 32, generator=generator)
        images = (0.8 * palette[labels] + noise).clamp(0, 1)
        return ImageSet(images=images, labels=labels, name="colours", split=split)

    folder = train_domain_classifier(
        "colours", epochs=8, batch_size=50, out_dir=tmp_path / "c", progress=False, loader=loader
    )
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["settings"]["architecture"] == "small-resnet"
    assert meta["test_accuracy"] >= 0.9, meta["history"]
    extractor = get_extractor("domain", weights=folder)
    real, same = loader("colours", "train").images, loader("colours", "test").images
    near = fid(real, same, features=extractor)["fid"]
    far = fid(real, 1.0 - same, features=extractor)["fid"]
    assert 0 <= near < 0.1 * far, (near, far)


def test_interrupted_training_resumes_to_the_same_classifier(tmp_path, monkeypatch) -> None:
    import varloss.quality.domain as domain

    options = dict(epochs=4, limit=300, batch_size=50, seed=2, progress=False)
    straight = train_domain_classifier("digits", out_dir=tmp_path / "straight", **options)
    original, calls = domain._accuracy, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # while evaluating epoch 2: epoch 1 is checkpointed
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(domain, "_accuracy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_domain_classifier("digits", out_dir=tmp_path / "resumed", **options)
    state = torch.load(tmp_path / "resumed" / domain.CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == 1 and not (tmp_path / "resumed" / "meta.json").exists()
    monkeypatch.setattr(domain, "_accuracy", original)
    resumed = train_domain_classifier("digits", out_dir=tmp_path / "resumed", **options)
    first, second = (json.loads((f / "meta.json").read_text()) for f in (straight, resumed))
    assert second["weights_sha256"] == first["weights_sha256"]
    assert second["history"] == first["history"] and len(second["history"]) == 4
    assert not (resumed / domain.CHECKPOINT_FILE).exists()


def test_damaged_checkpoint_is_never_trained_on(tiny_classifier, tmp_path) -> None:
    _, folder = tiny_classifier
    out = tmp_path / "damaged"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"truncated, not a torch checkpoint")
    again = train_domain_classifier(
        "digits", epochs=6, limit=400, batch_size=50, seed=0, out_dir=out, progress=False
    )
    # started afresh: the same weights as the uninterrupted training of the fixture
    expected = json.loads((folder / "meta.json").read_text())["weights_sha256"]
    assert json.loads((again / "meta.json").read_text())["weights_sha256"] == expected
    assert not (out / "checkpoint.pt").exists()
