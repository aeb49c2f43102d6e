"""The three caches (decoded data sets, domain classifiers, FID statistics) are run-folder-layer
folders: a damaged file is detected and named in one sentence, then the entry is built again;
entries of the older layouts are still read (data, classifiers) or rebuilt (statistics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from varloss._hashing import sha256_arrays
from varloss.data import ImageSet, load
from varloss.data.cache import RECORD_FILE, load_split, read_record, store
from varloss.errors import InputError
from varloss.quality import fid, load_domain_classifier, train_domain_classifier
from varloss.quality.statistics import STATISTICS_FILE
from varloss.runs import LOCK_FILE, MANIFEST_FILE, MODEL_FILE, RunFolder


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _flip_last_byte(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 1]))


def _toy_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8), np.arange(6, dtype=np.uint8)


# ---- the data cache ---------------------------------------------------------------------------


def test_a_damaged_data_array_is_named_and_its_entry_discarded(cache_dir: Path, capsys) -> None:
    images, labels = _toy_arrays()
    entry = cache_dir / "toy"
    store(entry, {"train": (images, labels)}, source="unit test")
    manifest = json.loads((entry / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {RECORD_FILE, "train-images.npy", "train-labels.npy"}
    _flip_last_byte(entry / "train-labels.npy")
    assert load_split(entry, "train") is None
    err = capsys.readouterr().err
    assert f"{entry / 'train-labels.npy'} is damaged (its SHA-256 does not match" in err
    assert read_record(entry) is None and not (entry / "train-images.npy").exists()


def test_a_forged_manifest_does_not_pass_the_catalogue_pins(cache_dir: Path, capsys) -> None:
    images, labels = _toy_arrays()
    entry = cache_dir / "pinned"
    store(entry, {"train": (images, labels)}, source="unit test")
    pins = {"images": sha256_arrays(images), "labels": sha256_arrays(labels)}
    assert load_split(entry, "train", pins=pins) is not None
    _flip_last_byte(entry / "train-images.npy")
    RunFolder(entry).record("train-images.npy")  # the manifest forged to match the damage
    assert load_split(entry, "train") is not None  # the manifest alone is fooled ...
    assert load_split(entry, "train", pins=pins) is None  # ... the pin is not
    err = capsys.readouterr().err
    assert f"train images ({entry / 'train-images.npy'}) fail their SHA-256 check" in err


def _old_layout_entry(entry: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """An entry as varloss wrote it before the run-folder layer: the record in manifest.json."""
    entry.mkdir(parents=True)
    np.save(entry / "train-images.npy", images)
    np.save(entry / "train-labels.npy", labels)
    record = {
        "count": len(images),
        "shape": list(images.shape[1:]),
        "images_sha256": sha256_arrays(images),
        "labels_sha256": sha256_arrays(labels),
    }
    old = {"format": 1, "source": "old", "created": "2026-01-01T00:00:00Z", "name": "cifar10"}
    (entry / MANIFEST_FILE).write_text(json.dumps({**old, "splits": {"train": record}}))


def test_an_older_data_entry_is_still_read_and_moved_to_the_current_layout(
    cache_dir: Path, capsys
) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(4, dtype=np.uint8)
    _old_layout_entry(cache_dir / "cifar10", images, labels)
    loaded = load("cifar10", "train", sources=("cache",))  # no other source: the old entry
    np.testing.assert_array_equal(loaded.images.numpy(), images.astype(np.float32) / 255)
    assert "moved the cache entry" in capsys.readouterr().err
    record = read_record(cache_dir / "cifar10")
    assert record["format"] == 2 and record["splits"]["train"]["count"] == 4
    load("cifar10", "train", sources=("cache",))
    assert "moved" not in capsys.readouterr().err  # once


def test_an_older_data_entry_with_a_damaged_array_is_not_kept(cache_dir: Path, capsys) -> None:
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    _old_layout_entry(cache_dir / "cifar10", images, np.arange(4, dtype=np.uint8))
    _flip_last_byte(cache_dir / "cifar10" / "train-images.npy")
    with pytest.raises(InputError, match="could not be obtained"):
        load("cifar10", "train", sources=("cache",))
    assert "kept nothing (its arrays fail their SHA-256 check)" in capsys.readouterr().err
    assert not (cache_dir / "cifar10" / "train-images.npy").exists()


# ---- the domain-classifier cache ----------------------------------------------------------


OPTIONS = {"epochs": 1, "limit": 100, "batch_size": 50, "seed": 0, "progress": False}


def test_a_damaged_domain_classifier_is_named_and_trained_again(tmp_path: Path, capsys) -> None:
    folder = train_domain_classifier("digits", out_dir=tmp_path / "c", **OPTIONS)
    weights = json.loads((folder / "meta.json").read_text())["weights_sha256"]
    assert set(RunFolder(folder).manifest()) == {MODEL_FILE, "meta.json"}
    _flip_last_byte(folder / MODEL_FILE)
    with pytest.raises(InputError, match=rf"{folder / MODEL_FILE} is damaged .*delete the folder"):
        load_domain_classifier(folder)
    again = train_domain_classifier("digits", out_dir=folder, **OPTIONS)
    assert f"{folder / MODEL_FILE} is damaged" in capsys.readouterr().err
    assert json.loads((again / "meta.json").read_text())["weights_sha256"] == weights
    load_domain_classifier(again)  # checks out again


def test_an_older_domain_classifier_is_read_and_checked_by_its_weights_hash(tmp_path: Path) -> None:
    folder = train_domain_classifier("digits", out_dir=tmp_path / "c", **OPTIONS)
    (folder / MANIFEST_FILE).unlink()  # as written before the manifest existed
    model, meta = load_domain_classifier(folder)
    assert meta["settings"]["epochs"] == 1 and isinstance(model, nn.Module)
    _flip_last_byte(folder / MODEL_FILE)
    with pytest.raises(InputError, match="does not match the weights_sha256 of meta.json"):
        load_domain_classifier(folder)


# ---- the FID statistics cache -------------------------------------------------------------


def _real_and_generated() -> tuple[ImageSet, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    real = ImageSet(torch.rand(64, 1, 4, 4, generator=generator), None, "toy", "test")
    return real, torch.rand(50, 1, 4, 4, generator=generator) * 0.5


def test_damaged_cached_statistics_are_named_and_computed_again(cache_dir: Path, capsys) -> None:
    real, generated = _real_and_generated()
    first = fid(real, generated, features=nn.Flatten())
    [path] = (cache_dir / "fid-stats").glob(f"toy-test-*/{STATISTICS_FILE}")
    _flip_last_byte(path)
    second = fid(real, generated, features=nn.Flatten())
    assert f"{path} is damaged (its SHA-256 does not match" in capsys.readouterr().err
    assert not second["settings"]["real_statistics_cached"] and second["fid"] == first["fid"]
    third = fid(real, generated, features=nn.Flatten())  # the entry was written again
    assert third["settings"]["real_statistics_cached"] and third["fid"] == first["fid"]


def test_statistics_of_the_older_flat_layout_are_computed_again(cache_dir: Path, capsys) -> None:
    real, generated = _real_and_generated()
    fid(real, generated, features=nn.Flatten())
    [entry] = (cache_dir / "fid-stats").glob("toy-test-*")
    old = entry.parent / f"{entry.name}.safetensors"  # where older versions kept the tensors
    (entry / STATISTICS_FILE).rename(old)
    (entry / "statistics.json").rename(old.with_suffix(".json"))
    result = fid(real, generated, features=nn.Flatten())
    assert f"the cached statistics {old} are of an older varloss" in capsys.readouterr().err
    assert not result["settings"]["real_statistics_cached"] and not old.exists()


# ---- the run-folder layer's pieces the caches use ---------------------------------------------


def test_a_cache_lock_waits_for_another_process_and_is_reentrant(tmp_path: Path) -> None:
    folder = tmp_path / "entry"
    script = textwrap.dedent(
        f"""
        import os, time
        from filelock import FileLock
        os.makedirs({str(folder)!r}, exist_ok=True)
        with FileLock({str(folder / LOCK_FILE)!r}):  # RunFolder's lock, without importing torch
            print("locked", flush=True)
            time.sleep(1.5)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=r"in use by another varloss process after 0.2 s"):
            with RunFolder(folder).lock(wait=0.2):
                pass
        started = time.perf_counter()
        with RunFolder(folder).lock(wait=60, reentrant=True) as entry:
            assert time.perf_counter() - started > 0.8  # it waited for the holder's 1.5 s
            assert holder.wait(timeout=30) == 0
            with RunFolder(folder).lock(wait=0, reentrant=True):  # the same thread, again
                entry.write_array("a.npy", np.arange(3))
    finally:
        holder.wait(timeout=30)
    array = RunFolder(folder).read_array("a.npy")
    assert isinstance(array, np.memmap) and array.tolist() == [0, 1, 2]
    RunFolder(folder).clear()
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]
