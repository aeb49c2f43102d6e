"""The run-folder layer: the lock between processes, typed atomic reads and writes, and the
SHA-256 manifest that names a damaged file (truncated, altered, not JSON) in one sentence."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from varloss.errors import InputError
from varloss.runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    RunFolder,
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hold_lock_in_another_process(folder: Path) -> subprocess.Popen:
    """A separate Python process that takes the folder's lock and keeps it until stdin closes."""
    script = textwrap.dedent(
        f"""
        import sys
        from varloss.runs import RunFolder
        with RunFolder({str(folder)!r}).lock():
            print("locked", flush=True)
            sys.stdin.read()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_process_is_refused_at_once_and_the_lock_is_released(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = _hold_lock_in_another_process(folder)
    try:
        with pytest.raises(InputError, match=r"is in use by another varloss process \(lock .*"):
            with RunFolder(folder).lock():
                pass
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert holder.returncode == 0
    with RunFolder(folder).lock() as run:  # free again once the holder has gone
        run.write_json(CONFIG_FILE, {"a": 1})
    assert (folder / LOCK_FILE).exists() and (folder / CONFIG_FILE).is_file()


def test_the_lock_refuses_a_second_holder_in_the_same_process(tmp_path: Path) -> None:
    with RunFolder(tmp_path / "run").lock():
        with pytest.raises(InputError, match="wait for it or choose another --out"):
            with RunFolder(tmp_path / "run").lock():
                pass


def test_a_file_in_the_way_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(InputError, match="is a file; expected a folder"):
        with RunFolder(tmp_path / "taken").lock():
            pass
    with pytest.raises(InputError, match="cannot be created"):
        RunFolder(tmp_path / "taken" / "child").create()


def test_writes_are_recorded_and_reads_are_typed(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    rows = [{"epoch": 1, "loss": 0.25, "name": "dense"}, {"epoch": 2, "loss": -1.5e-3}]
    run.write_csv(HISTORY_FILE, rows, ("epoch", "loss", "name"))
    run.write_json(CONFIG_FILE, {"family": "dense", "latent": 2})
    assert (tmp_path / "run" / HISTORY_FILE).read_text() == (
        "epoch,loss,name\n1,0.25,dense\n2,-0.0015,\n"
    )
    assert run.read_csv(HISTORY_FILE) == [
        {"epoch": 1, "loss": 0.25, "name": "dense"},
        {"epoch": 2, "loss": -0.0015, "name": None},
    ]
    as_text = run.read_csv(HISTORY_FILE, typed=False)
    assert as_text[1] == {"epoch": "2", "loss": "-0.0015", "name": ""}
    manifest = json.loads((tmp_path / "run" / MANIFEST_FILE).read_text())
    for name in (HISTORY_FILE, CONFIG_FILE):
        path = tmp_path / "run" / name
        assert manifest["files"][name] == {"sha256": _sha256(path), "bytes": path.stat().st_size}
    assert run.verify(CONFIG_FILE) is True
    assert run.verify("never-written.txt") is False  # not listed: nothing to check


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.write_json(CONFIG_FILE, {"a": 1})
    with pytest.raises(ValueError):
        run.write_json(CONFIG_FILE, {"a": float("nan")})  # JSON has no NaN
    with pytest.raises(RuntimeError):
        with run.atomic_path(MODEL_FILE) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert run.read_json(CONFIG_FILE) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, MANIFEST_FILE]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_file_is_named_with_what_to_do(tmp_path: Path, damage: str) -> None:
    run = RunFolder(tmp_path)
    with run.atomic_path(MODEL_FILE) as tmp:
        tmp.write_bytes(bytes(range(256)) * 40)
    path = tmp_path / MODEL_FILE
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:1000])
    elif damage == "flip":  # same size: only the digest can tell
        path.write_bytes(data[:500] + bytes([data[500] ^ 0xFF]) + data[501:])
    else:
        path.unlink()
    expected = "is missing" if damage == "delete" else "is damaged"
    with pytest.raises(InputError, match=rf"{MODEL_FILE} {expected}.*varloss train --resume"):
        run.verify(MODEL_FILE)


def test_invalid_json_and_a_broken_manifest_are_one_sentence(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    (tmp_path / CONFIG_FILE).write_text('{"family": "dense",')  # never recorded: not listed
    with pytest.raises(InputError, match=rf"{CONFIG_FILE} is damaged \(not valid JSON"):
        run.read_json(CONFIG_FILE)
    with pytest.raises(InputError, match=f"has no {HISTORY_FILE}"):
        run.read_csv(HISTORY_FILE)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(InputError, match=rf"{MANIFEST_FILE} is damaged .*delete it"):
        run.verify(CONFIG_FILE)
    (tmp_path / MANIFEST_FILE).write_text('{"files": {"config.json": "abc"}}')
    with pytest.raises(InputError, match=rf"{MANIFEST_FILE} is damaged"):
        run.read_json(CONFIG_FILE)


def test_seal_covers_the_folder_but_not_hidden_files_or_sealed_subfolders(tmp_path: Path) -> None:
    study = RunFolder(tmp_path / "study")
    study.write_csv("results.csv", [{"a": 1}], ["a"])
    inner = RunFolder(tmp_path / "study" / "runs" / "one")
    inner.write_json(CONFIG_FILE, {})
    inner.seal()
    (tmp_path / "study" / "checkpoint").mkdir()
    (tmp_path / "study" / CHECKPOINT_FILE).write_bytes(b"state")
    (tmp_path / "study" / ".hidden").write_text("x")
    with study.lock():
        study.seal()
    files = json.loads((tmp_path / "study" / MANIFEST_FILE).read_text())["files"]
    assert sorted(files) == [CHECKPOINT_FILE, "results.csv"]
    assert files[CHECKPOINT_FILE]["sha256"] == hashlib.sha256(b"state").hexdigest()
    # a file removed before sealing leaves the manifest; forget and unlink drop entries
    (tmp_path / "study" / "results.csv").unlink()
    study.seal([])
    assert sorted(json.loads((tmp_path / "study" / MANIFEST_FILE).read_text())["files"]) == [
        CHECKPOINT_FILE
    ]
    study.unlink(CHECKPOINT_FILE)
    assert json.loads((tmp_path / "study" / MANIFEST_FILE).read_text())["files"] == {}


def test_tensors_arrays_and_checkpoints_round_trip_and_damage_is_named(tmp_path: Path) -> None:
    import numpy as np
    import torch

    run = RunFolder(tmp_path)
    weights = {"w": torch.arange(6.0).reshape(2, 3).t(), "b": torch.tensor([1.5])}  # w: a view
    run.write_tensors(MODEL_FILE, weights, {"family": "dense"})
    maps = {"var_real": np.linspace(0.0, 1.0, 12).reshape(1, 3, 4)}
    run.write_arrays("maps.npz", maps)
    state = {"epoch": 3, "model": weights, "history": [{"loss": 0.5}]}
    run.write_torch(CHECKPOINT_FILE, state)
    loaded = run.read_tensors(MODEL_FILE)
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    np.testing.assert_array_equal(run.read_arrays("maps.npz")["var_real"], maps["var_real"])
    checkpoint = run.read_torch(CHECKPOINT_FILE)
    assert checkpoint["epoch"] == 3 and checkpoint["history"] == [{"loss": 0.5}]
    assert torch.equal(checkpoint["model"]["w"], weights["w"])
    (tmp_path / MANIFEST_FILE).unlink()  # unchecked now: the readers' own errors are one sentence
    for name, reader, kind in (
        (MODEL_FILE, run.read_tensors, "safetensors"),
        ("maps.npz", run.read_arrays, "npz"),
        (CHECKPOINT_FILE, run.read_torch, "torch.save"),
    ):
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:40])
        with pytest.raises(InputError, match=rf"{name} could not be read as a {kind} file"):
            reader(name)


def test_a_failed_block_removes_the_folder_it_created_but_nothing_else(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with RunFolder(tmp_path / "new").lock():
            raise RuntimeError("the data set could not be read")
    assert not (tmp_path / "new").exists()
    with pytest.raises(RuntimeError):
        with RunFolder(tmp_path / "kept").lock() as run:
            run.write_json(CONFIG_FILE, {})
            raise RuntimeError("later failure")
    assert (tmp_path / "kept" / CONFIG_FILE).is_file()
    (tmp_path / "existing").mkdir()
    with pytest.raises(RuntimeError):
        with RunFolder(tmp_path / "existing").lock():
            raise RuntimeError("failure")
    assert (tmp_path / "existing").is_dir()  # the user's folder stays
