"""Nothing lost (issue 24): varloss never replaces a page or deletes a file it did not write, and
a kill at any moment leaves a run that `--resume` continues.

Run folders are tiny real training runs (digits, a dense VAE, a few images), built in the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_cli import invoke

import varloss
from varloss._io import FAULT_ENV, FAULT_EXIT_CODE
from varloss.errors import InputError
from varloss.pipelines.train import TrainConfig, train
from varloss.report import write_report
from varloss.run_removal import remove_written
from varloss.runs import CHECKPOINT_FILE, HISTORY_FILE, MANIFEST_FILE, MODEL_FILE, RunFolder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = dict(
    family="dense", dataset="digits", epochs=3, latent=2, seed=5, limit=64, eval_limit=40,
    batch_size=32, hyper={"hidden_sizes": [16]},
)  # fmt: skip


def tiny(out: Path, **overrides) -> TrainConfig:
    """A run of a few seconds: dense VAE, 64 digits, 3 epochs."""
    return TrainConfig(**{**SETTINGS, "out": str(out), **overrides})


# ---- report on a measure JSON: a page of its own, never someone else's ----


def test_report_on_a_json_never_replaces_a_page_it_did_not_write(
    monkeypatch, capsys, tmp_path
) -> None:
    rng = np.random.default_rng(0)
    varloss.measure(rng.random((20, 4))).to_json(tmp_path / "x.json")
    users_page = tmp_path / "report.html"
    users_page.write_text("<html>my own page</html>")
    code, out, err = invoke(monkeypatch, capsys, "report", tmp_path / "x.json")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "x.html")
    assert users_page.read_text() == "<html>my own page</html>"
    assert '<meta name="generator" content="varloss">' in (tmp_path / "x.html").read_text()
    # written again: varloss's own page is replaced, and a second JSON gets its own page
    varloss.measure(rng.random((20, 4))).to_json(tmp_path / "y.json")
    assert write_report(tmp_path / "x.json") == tmp_path / "x.html"
    assert write_report(tmp_path / "y.json") == tmp_path / "y.html"
    # a foreign file with the page's name is refused in one sentence, and left as it was
    (tmp_path / "x.html").write_text("notes")
    code, _, err = invoke(monkeypatch, capsys, "report", tmp_path / "x.json")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "was not written by varloss" in err
    assert (tmp_path / "x.html").read_text() == "notes"
    # a folder page: the same rule for DIR/report.html
    folder = tmp_path / "measured"
    folder.mkdir()
    varloss.measure(rng.random((20, 4))).to_json(folder / "report.json")
    (folder / "report.html").write_text("mine")
    with pytest.raises(InputError, match="was not written by varloss"):
        write_report(folder / "report.json")
    assert (folder / "report.html").read_text() == "mine"


# ---- --force deletes only what varloss wrote ----


def test_force_deletes_only_what_varloss_wrote_and_the_old_models_remedies(tmp_path) -> None:
    out = tmp_path / "run"
    train(tiny(out, epochs=1), progress=False)
    write_report(out)
    page = (out / "report.html").read_text()
    with pytest.raises(InputError, match="is the report of the varloss run"):
        write_report(out / "report.json")  # its measure keys: never a page over the run's own
    assert (out / "report.html").read_text() == page
    # the remedies of this model and files of the user's, beside varloss's and inside its folders
    correct = RunFolder(out / "correct")
    with correct.lock():
        correct.write_json("report.json", {"baseline": {"var_generated": 0.5}})
        correct.seal()
    mine = [out / "notes.txt", out / "checkpoint" / "mine.pt", out / "correct" / "mine.txt"]
    for path in mine:
        path.write_text("the user's")
    train(tiny(out, epochs=1, seed=6), force=True, progress=False)
    assert all(path.read_text() == "the user's" for path in mine)
    assert not (out / "correct" / "report.json").exists()  # the old model's remedies: gone
    assert not (out / "report.html").exists()  # the old model's page: gone (report writes anew)
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 6
    assert RunFolder(out).verify(CHECKPOINT_FILE, required=True)


def test_force_refuses_a_folder_that_is_not_a_varloss_run(monkeypatch, capsys, tmp_path) -> None:
    out = tmp_path / "mine"
    (out / "checkpoint").mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "checkpoint" / "last.pt").write_text("my own file")
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    with pytest.raises(InputError, match="is not a varloss run"):
        train(tiny(out, epochs=1), force=True, progress=False)
    code, _, err = invoke(
        monkeypatch, capsys, "train", "--dataset", "digits", "--out", out, "--force", "--quiet"
    )
    assert code == 2 and "is not a varloss run" in err and len(err.strip().splitlines()) == 1
    # nothing deleted, and no lock file left to make it look like varloss's next time
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_remove_written_never_follows_a_forged_manifest_out_of_the_folder(tmp_path) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        folder.write_json("config.json", {})
    manifest = json.loads(folder.file(MANIFEST_FILE).read_text())
    manifest["files"]["../precious.txt"] = manifest["files"]["config.json"]
    folder.file(MANIFEST_FILE).write_text(json.dumps(manifest))
    remove_written(folder)
    assert outside.read_text() == "keep"
    assert not folder.file("config.json").exists() and not folder.file(MANIFEST_FILE).exists()


# ---- a kill between two writes that must agree: --resume continues, bitwise ----

KILL_POINTS = [
    "checkpoint:staged@1",  # epoch 1 written to temporary files, nothing announced
    "checkpoint:announced@1",  # the first checkpoint announced, not yet in place
    "checkpoint:replaced@1",  # epoch 1's history in place, its checkpoint not
    "checkpoint:announced@2",  # epoch 2 (the last) announced: both files still epoch 1's
    "checkpoint:replaced@3",  # epoch 2's history in place, the checkpoint still epoch 1's
    "checkpoint:replaced@4",  # both in place, the manifest not yet updated (the campaign's hit)
    "model:saved",  # the trained model written, no report yet
    "report:written",  # the report written, the manifest not sealed
]

# One process imports varloss once, then forks a child per kill point (before torch computes
# anything, so no thread pool is forked); each child trains until VARLOSS_FAULT kills it.
_KILLER = """
import json, os, sys
from varloss.pipelines.train import TrainConfig, train
codes = {}
for point, config in json.loads(sys.argv[1]).items():
    pid = os.fork()
    if pid == 0:
        os.environ[sys.argv[2]] = point
        train(TrainConfig(**config), progress=False)
        os._exit(0)
    codes[point] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(codes))
"""


@pytest.mark.slow  # about 20 s on two shared cores: eight killed runs and their resumes
def test_a_kill_at_every_write_pair_resumes_bitwise(tmp_path) -> None:
    reference = train(tiny(tmp_path / "reference", epochs=2), progress=False)
    expected = load_file(tmp_path / "reference" / MODEL_FILE)
    configs = {
        point: tiny(tmp_path / f"killed{i}", epochs=2) for i, point in enumerate(KILL_POINTS)
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop(FAULT_ENV, None)
    plan = json.dumps({point: c.to_dict() | {"out": c.out} for point, c in configs.items()})
    killer = subprocess.run(
        [sys.executable, "-c", _KILLER, plan, FAULT_ENV],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert killer.returncode == 0, killer.stderr
    codes = json.loads(killer.stdout.strip().splitlines()[-1])
    for point, config in configs.items():
        assert codes[point] == FAULT_EXIT_CODE, (point, codes[point])  # killed at that point
        resumed = train(config, resume=True, progress=False)  # never "damaged, start over"
        weights = load_file(Path(config.out) / MODEL_FILE)
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[k], expected[k]) for k in expected), point
        for key in ("var_real", "var_reconstructed", "mse", "final_loss"):
            assert resumed[key] == reference[key], (point, key)
        history = RunFolder(config.out).read_csv(HISTORY_FILE)
        assert [row["loss"] for row in history] == [row["loss"] for row in reference["history"]]


# A resumed run prepares its folder before it trains: the report goes, then the manifest forgets
# what will be rewritten. One process per point: a finished 1-epoch run resumed to 2 epochs.
RESUME_POINTS = ["resume:report-removed", "resume:entries-dropped"]
_RESUME_KILLER = """
import json, sys
from varloss.pipelines.train import TrainConfig, train
train(TrainConfig(**json.loads(sys.argv[1])), resume=True, progress=False)
"""


@pytest.mark.slow  # about 10 s: two short runs, each killed once and resumed
@pytest.mark.parametrize("point", RESUME_POINTS)
def test_a_kill_while_resume_prepares_the_folder_resumes_bitwise(tmp_path, point) -> None:
    reference = train(tiny(tmp_path / "reference", epochs=2), progress=False)
    expected = load_file(tmp_path / "reference" / MODEL_FILE)
    train(tiny(tmp_path / "run", epochs=1), progress=False)  # finished, then asked for more
    config = tiny(tmp_path / "run", epochs=2)
    env = {**os.environ, FAULT_ENV: point, "PYTHONPATH": os.pathsep.join(sys.path)}
    plan = json.dumps(config.to_dict() | {"out": config.out})
    killed = subprocess.run(
        [sys.executable, "-c", _RESUME_KILLER, plan], capture_output=True, text=True,
        timeout=300, env=env,
    )  # fmt: skip
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr  # killed at that point
    assert not RunFolder(config.out).exists("report.json")  # unfinished, as it is
    resumed = train(config, resume=True, progress=False)  # never "damaged, start over"
    weights = load_file(Path(config.out) / MODEL_FILE)
    assert all(torch.equal(weights[k], expected[k]) for k in expected), point
    for key in ("var_real", "var_reconstructed", "mse", "final_loss"):
        assert resumed[key] == reference[key], (point, key)
