"""The second bad-input campaign (issue 24): whatever a user types, varloss does the right thing or
says in one sentence what is wrong with which input, and no number that cannot be right leaves it.

Every hostile input is built here, and each class is driven through each entry point that meets
it (`measure`, `data info`, `train --dataset`, the library), in-process through `run`, the
console-script entry point: exit 2, one line on stderr, no traceback, nothing written.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import invoke

import varloss
from varloss._io import atomic_write_json, check_output_path
from varloss.data import load
from varloss.data.readers import read_array_file
from varloss.errors import InputError
from varloss.pipelines.runtime import pick_device
from varloss.pipelines.study.spec import load_spec
from varloss.runs import CHECKPOINT_FILE, RunFolder


def refused(monkeypatch, capsys, *args: str, says: tuple[str, ...] = ()) -> str:
    """Run `varloss ARGS`, assert one sentence on stderr and exit 2; return the sentence."""
    code, _, err = invoke(monkeypatch, capsys, *args)
    said = re.compile(r"varloss\.\w+: ")  # progress messages (`varloss._progress.say`)
    lines = [line for line in err.splitlines() if line.strip() and not said.match(line)]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in says:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def real(tmp_path: Path) -> Path:
    path = tmp_path / "real.npy"
    np.save(path, np.random.default_rng(0).random((12, 6, 6)))
    return path


# ---- object arrays: every reader, every form ----


@pytest.fixture()
def object_files(tmp_path: Path) -> dict[str, Path]:
    objects = np.array([[1, "a"], [None, 2.0]], dtype=object)
    files = {"npz": tmp_path / "obj.npz", "npy": tmp_path / "obj.npy"}
    np.savez(files["npz"], x=objects)
    np.save(files["npy"], objects, allow_pickle=True)
    files["split"] = tmp_path / "split.npz"  # a numeric train split, an object test split
    np.savez(files["split"], train=np.zeros((4, 6, 6)), test=objects)
    files["labels"] = tmp_path / "labels.npz"  # numeric images, object labels
    np.savez(files["labels"], images=np.zeros((4, 6, 6)), labels=np.array(list("abcd"), object))
    return files


def test_object_arrays_are_one_sentence_in_every_form(
    monkeypatch, capsys, tmp_path, real, object_files
) -> None:
    npz, npy, split = object_files["npz"], object_files["npy"], object_files["split"]
    forms = [
        ("measure", "--real", real, "--reconstructed", f"npz:{npz}"),
        ("measure", "--real", real, "--reconstructed", f"{npz}:x"),
        ("measure", "--real", real, "--reconstructed", npz),
        ("measure", "--real", real, "--generated", npy),
        ("measure", "--real", real, "--generated", f"npz:{object_files['labels']}"),
        ("data", "info", f"npz:{npz}"),
        ("data", "info", f"npz:{npy}"),
        ("data", "info", f"npz:{split}"),
        ("data", "info", f"npz:{object_files['labels']}"),
        ("train", "--dataset", f"npz:{npz}", "--out", tmp_path / "run", "--epochs", "1"),
    ]
    for args in forms:
        sentence = refused(monkeypatch, capsys, *args, says=("holds Python objects",))
        assert "allow_pickle" not in sentence  # numpy's advice to unpickle is never given
    assert not (tmp_path / "run").exists()
    with pytest.raises(InputError, match=r"obj.npy holds Python objects"):
        read_array_file(npy, None, "real")
    with pytest.raises(InputError, match=r"split.npz:test holds Python objects"):
        load(f"npz:{split}", "test")


# ---- decompression bombs and hostile .pt files ----


@pytest.fixture()
def bomb(tmp_path: Path, monkeypatch) -> Path:
    """A PNG over PIL's pixel limit (lowered here so the fixture stays small): a bomb to PIL."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "bomb.png"
    Image.new("L", (80, 80)).save(path)  # 6400 pixels: > 2 x limit, PIL's error
    Image.new("L", (40, 40)).save(tmp_path / "warn.png")  # 1600: PIL's warning only
    return path


def test_decompression_bombs_name_the_file_alone_or_in_a_folder(
    monkeypatch, capsys, tmp_path, real, bomb
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("L", (6, 6)).save(folder / "a.png")
    bomb.rename(folder / "b.png")
    warned = tmp_path / "warn.png"
    cases = [
        (("measure", "--real", real, "--generated", folder / "b.png"), "b.png"),
        (("measure", "--real", real, "--generated", warned), "warn.png"),
        (("measure", "--real", folder, "--generated", real), "b.png"),
        (("data", "info", f"folder:{folder}"), "b.png"),
    ]
    for args, name in cases:
        sentence = refused(monkeypatch, capsys, *args, says=("decompression-bomb limit", name))
        assert "DOS attack" not in sentence


def test_a_hostile_pt_file_gets_varlosss_sentence_not_torchs_advice(
    monkeypatch, capsys, tmp_path, real
) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    hostile = tmp_path / "hostile.pt"
    torch.save({"images": torch.zeros(4, 6, 6), "payload": Payload()}, hostile)
    sentence = refused(
        monkeypatch, capsys, "measure", "--real", real, "--generated", hostile,
        says=("hostile.pt holds Python objects", "never runs code"),
    )  # fmt: skip
    assert "weights_only" not in sentence and "safe_globals" not in sentence
    assert "this must never run" not in capsys.readouterr().out
    # a checkpoint of a run folder (no manifest to vouch for it): the same refusal
    folder = RunFolder(tmp_path / "run")
    folder.file("checkpoint").mkdir(parents=True)
    torch.save({"epoch": 1, "payload": Payload()}, folder.file(CHECKPOINT_FILE))
    with pytest.raises(InputError, match="never loads") as refusal:
        folder.read_torch(CHECKPOINT_FILE)
    assert "weights_only" not in str(refusal.value)


# ---- specs, devices, float options ----


def test_a_study_spec_that_is_not_utf8_is_one_sentence(monkeypatch, capsys, tmp_path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(InputError, match=r"is not UTF-8 text \(byte 6"):
        load_spec(spec)
    refused(
        monkeypatch, capsys, "study", "--preset", spec, "--out", tmp_path / "study",
        says=("not UTF-8",),
    )  # fmt: skip
    assert not (tmp_path / "study").exists()


def test_devices_torch_cannot_compute_on_are_refused_before_any_file(
    monkeypatch, capsys, tmp_path, real
) -> None:
    with pytest.raises(InputError, match="device 'meta' cannot run models here"):
        pick_device("meta")
    assert pick_device("cpu") == torch.device("cpu")
    sentence = refused(
        monkeypatch, capsys, "train", "--dataset", "digits", "--device", "meta",
        "--out", tmp_path / "run", says=("device 'meta'",),
    )  # fmt: skip
    assert not (tmp_path / "run").exists()
    refused(
        monkeypatch, capsys, "study", "--preset", "quick", "--out", tmp_path / "study",
        "--device", "meta", says=("device 'meta'",),
    )  # fmt: skip
    assert not (tmp_path / "study").exists()
    run = tmp_path / "trained"  # a folder with a (damaged) model: the device is what is wrong
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"not weights")
    sentence = refused(
        monkeypatch, capsys, "measure", "--real", real, "--model", run, "--device", "meta",
        says=("device 'meta' cannot run models",),
    )  # fmt: skip
    assert "model.safetensors" not in sentence
    sentence = refused(
        monkeypatch, capsys, "correct", run, "--device", "meta", "--fid", "off",
        says=("device 'meta' cannot run models",),
    )  # fmt: skip
    assert not (run / "correct").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("correct", "RUN", "--tau", "inf"),
        ("correct", "RUN", "--tau", "nan"),
        ("train", "--dataset", "digits", "--out", "OUT", "--lr", "inf"),
        ("train", "--dataset", "digits", "--out", "OUT", "--validation", "-inf"),
        ("train", "--dataset", "digits", "--out", "OUT", "--min-delta", "nan"),
    ],
)
def test_non_finite_float_options_are_refused_by_every_command(
    monkeypatch, capsys, tmp_path, args
) -> None:
    args = [str(tmp_path / a) if a in ("RUN", "OUT") else a for a in args]
    flag = next(a for a in args if a.startswith("--") and a not in ("--dataset", "--out"))
    refused(monkeypatch, capsys, *args, says=(flag, "must be a finite number"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---- no absurd number leaves varloss ----


def test_float_sets_on_another_range_are_refused_unless_declared(
    monkeypatch, capsys, tmp_path, real
) -> None:
    rng = np.random.default_rng(1)
    for scale in (65535.0, 1e10):
        other = tmp_path / f"scaled{scale:g}.npy"
        np.save(other, rng.random((12, 6, 6)) * scale)
        for role in ("--reconstructed", "--generated"):
            refused(
                monkeypatch, capsys, "measure", "--real", real, role, other,
                says=("values lie in", f"--range {role[2:]}="),
            )  # fmt: skip
        refused(  # the real set on the odd range: declare the real one
            monkeypatch, capsys, "measure", "--real", other, "--reconstructed", real,
            says=("--range real=",),
        )  # fmt: skip
    declared = varloss.measure(
        real, reconstructed=tmp_path / "scaled65535.npy",
        value_range={"reconstructed": (0, 65535)},
    )  # fmt: skip
    reference = np.load(tmp_path / "scaled65535.npy").reshape(12, -1) / 65535.0
    assert declared.var_reconstructed == pytest.approx(np.var(reference, axis=0).mean(), 1e-12)
    # a decoder's overshoot (values to 1.3 beside [0, 1] data) is not another range, nor a
    # set of arbitrary units shrunk to half the scale (the very loss varloss measures)
    overshoot = np.load(real) * 1.5 - 0.2
    report = varloss.measure(real, reconstructed=overshoot)
    assert report.mse == pytest.approx(np.mean((overshoot - np.load(real)) ** 2), 1e-12)
    units = rng.random((12, 36)) * 1e4 + 500
    report = varloss.measure(units, generated=units[::-1] * 0.5)
    assert report.var_generated == pytest.approx(np.var(units * 0.5, axis=0).mean(), 1e-12)


def test_overflow_zero_width_and_empty_sets_never_print_inf_or_nan(
    monkeypatch, capsys, tmp_path, real
) -> None:
    huge = tmp_path / "huge.npy"
    np.save(huge, np.random.default_rng(2).random((12, 6, 6)) * 1e200)
    out = tmp_path / "out.json"
    refused(
        monkeypatch, capsys, "measure", "--real", huge, "--reconstructed", huge, "--json", out,
        says=("real values reach 1e+200", "overflow float64"),
    )  # fmt: skip
    assert not out.exists()
    # 1e150 still squares within float64: measured, finite
    big = np.random.default_rng(2).random((12, 6, 6)) * 1e150
    report = varloss.measure(big, generated=big[::-1])
    assert math.isfinite(report.var_real) and report.var_real == pytest.approx(
        np.var(big.reshape(12, -1), axis=0).mean(), rel=1e-9
    )
    zero_width = tmp_path / "zero.npy"
    np.save(zero_width, np.zeros((12, 6, 0)))
    refused(
        monkeypatch, capsys, "measure", "--real", zero_width, "--reconstructed", zero_width,
        says=("images without pixels",),
    )  # fmt: skip
    with pytest.raises(InputError, match="images without pixels"):
        varloss.measure(np.zeros((5, 0)), generated=np.zeros((5, 0)))
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 6, 6)))
    refused(monkeypatch, capsys, "measure", "--real", empty, "--generated", real, says=("empty",))
    # the JSON writer's backstop: an infinite result is one sentence, and no file is written
    with pytest.raises(InputError, match="not a finite number"):
        atomic_write_json(tmp_path / "inf.json", {"fid": math.inf})
    assert not (tmp_path / "inf.json").exists()


def test_both_splits_shapes_are_checked_up_front(monkeypatch, capsys, tmp_path) -> None:
    rng = np.random.default_rng(3)
    data = tmp_path / "two.npz"
    np.savez(data, train=rng.random((6, 6, 6)), test=rng.random((6, 8, 8)))
    refused(monkeypatch, capsys, "data", "info", f"npz:{data}", says=("1 x 6 x 6", "1 x 8 x 8"))
    run = tmp_path / "run"
    refused(
        monkeypatch, capsys, "train", "--dataset", f"npz:{data}", "--out", run, "--epochs", "1",
        says=("both splits must have one shape",),
    )  # fmt: skip
    assert not run.exists()  # refused before any epoch: no folder
    folder = tmp_path / "folders"
    for split, side in (("train", 6), ("test", 7)):
        (folder / split).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (side, side), color=i * 50).save(folder / split / f"{i}.png")
    refused(monkeypatch, capsys, "data", "info", f"folder:{folder}", says=("1 x 7 x 7",))
    same = tmp_path / "same.npz"
    np.savez(same, train=rng.random((6, 6, 6)), test=rng.random((3, 6, 6)))
    code, out, err = invoke(monkeypatch, capsys, "data", "info", f"npz:{same}", "--json")
    assert code == 0, err
    assert json.loads(out)["splits"]["test"]["count"] == 3


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_or_blank_output_paths_are_refused(
    monkeypatch, capsys, tmp_path, real, blank
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for folder in (False, True):
        with pytest.raises(InputError, match="is empty; expected a"):
            check_output_path(blank, "--out", folder=folder)
    refused(
        monkeypatch, capsys, "measure", "--real", real, "--generated", real, "--json", blank,
        says=("--json", "is empty"),
    )  # fmt: skip
    refused(monkeypatch, capsys, "train", "--dataset", "digits", "--out", blank, says=("--out",))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---- domain features of a set without labels (issue 22/24 follow-up) ----


def test_domain_features_of_a_set_without_labels_name_the_set_and_point_to_inception(
    monkeypatch, capsys, tmp_path
) -> None:
    """An npz without a labels array has no domain classifier: `varloss fid` (and `measure
    --fid domain`, and the library) say so in one sentence naming the set and pointing to the
    Inception features, instead of the generic "need a labelled data set"; nothing is written."""
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    bare = tmp_path / "bare.npz"
    np.savez(bare, images=np.random.default_rng(3).random((20, 8, 8)))
    spec = f"npz:{bare}"
    expected = (
        f"error: {spec!r} has no labels, so varloss has no domain classifier for it; use "
        "--features inception (`varloss measure`: --fid inception) for the FID of the papers "
        "(fetch its weights once with `varloss weights fetch inception`)."
    )
    out = tmp_path / "fid.json"
    fid_args = ("fid", "--real", spec, "--generated", spec, "--json", out)
    assert refused(monkeypatch, capsys, *fid_args, "--features", "domain") == expected
    assert not out.exists()
    measure_args = ("measure", "--real", spec, "--reconstructed", spec, "--fid", "domain")
    assert refused(monkeypatch, capsys, *measure_args) == expected
    with pytest.raises(InputError) as error:
        varloss.quality.fid(spec, spec, features="domain")
    assert f"error: {error.value}" == expected
    assert not (tmp_path / "cache" / "domain-classifiers").exists() or not any(
        (tmp_path / "cache" / "domain-classifiers").iterdir()
    )


def test_domain_features_of_files_of_no_data_set_say_what_to_give(monkeypatch, capsys, tmp_path):
    """Files name no data set, so no domain classifier: fid and measure say, in command-line
    terms, which option gives one (--dataset) or the Inception features instead."""
    images = tmp_path / "g.npy"
    np.save(images, np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32))
    for args in (
        ("fid", "--real", str(images), "--generated", str(images)),
        ("measure", "--real", str(images), "--reconstructed", str(images), "--fid", "domain"),
    ):
        refused(
            monkeypatch,
            capsys,
            *args,
            says=("--dataset mnist", "--features inception", "--fid inception"),
        )
