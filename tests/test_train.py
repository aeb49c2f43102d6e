"""The trainer: every family learns, exact resume, NaN stop, refusing to overwrite, the run folder,
and DistributedDataParallel with gloo on 2 CPU processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from varloss.errors import InputError, TrainingError
from varloss.pipelines.train import TrainConfig, evaluate, train
from varloss.runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    REPORT_FILE,
    TRAIN_RUN_FILES,
    RunFolder,
)

MEASURE_KEYS = (
    "var_real",
    "var_reconstructed",
    "var_generated",
    "variance_loss_reconstructed",
    "variance_loss_generated",
    "mse",
    "bias2",
    "cov_term",
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(out: Path, **overrides) -> TrainConfig:
    values = dict(
        family="dense",
        dataset="digits",
        epochs=2,
        latent=2,
        seed=3,
        out=str(out),
        limit=300,
        eval_limit=120,
        batch_size=30,
        hyper={"hidden_sizes": [64]},
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize(
    ("family", "hyper"),
    [
        ("dense", {"hidden_sizes": [64]}),
        ("conv", {}),
        ("resnet", {"base_channels": 8, "max_channels": 32}),
        ("draw", {"steps": 4, "hidden": 64}),
        ("convdraw", {"steps": 2, "hidden_channels": 8, "canvas_channels": 8}),
    ],
)
def test_every_family_learns_and_writes_the_run_folder(tmp_path: Path, family: str, hyper) -> None:
    out = tmp_path / family
    report = train(
        _config(out, family=family, hyper=hyper, epochs=4, latent=4, lr=3e-3), progress=False
    )
    history = report["history"]
    assert history[-1]["loss"] < history[0]["loss"], history
    folder = RunFolder(out)
    for name in (*TRAIN_RUN_FILES, CHECKPOINT_FILE):  # each one sealed in the manifest
        assert folder.verify(name), name
    saved = folder.read_json(REPORT_FILE)
    assert saved["n_real"] == saved["n_reconstructed"] == saved["n_generated"] == 120
    assert saved["variance_loss_reconstructed"] == pytest.approx(
        saved["mse"] - saved["bias2"] + saved["cov_term"], abs=1e-12
    )
    assert saved["settings"]["train"]["family"] == family
    rows = folder.read_csv(HISTORY_FILE)
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    assert [row["loss"] for row in rows] == pytest.approx([row["loss"] for row in history])
    assert all(row["seconds"] > 0 and row["cpu_seconds"] > 0 for row in rows)


def test_resume_equals_uninterrupted_training_bitwise(tmp_path: Path) -> None:
    whole = train(_config(tmp_path / "whole", epochs=3), progress=False)
    train(_config(tmp_path / "parts", epochs=1), progress=False)
    assert (tmp_path / "parts" / REPORT_FILE).is_file()
    resumed = train(_config(tmp_path / "parts", epochs=3), resume=True, progress=False)
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "parts" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for key in MEASURE_KEYS:
        assert resumed[key] == whole[key], key
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in whole["history"]]
    # a finished run asked to resume to the same epochs returns its report untouched
    again = train(_config(tmp_path / "parts", epochs=3), resume=True, progress=False)
    assert again["mse"] == resumed["mse"]


def test_same_weights_give_the_same_report(tmp_path: Path) -> None:
    from varloss.models import load_model

    config = _config(tmp_path / "run")
    report = train(config, progress=False)
    again = evaluate(load_model(tmp_path / "run"), config)
    for key in MEASURE_KEYS:
        assert again[key] == report[key], key


@pytest.mark.parametrize("sync_each_step", [True, False], ids=["cpu-check", "deferred-check"])
def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync_each_step: bool
) -> None:
    import varloss.pipelines.train
    from varloss.models.base import VAE

    if not sync_each_step:  # the accelerator path: flags kept on the device, checked every 20
        monkeypatch.setattr(varloss.pipelines.train, "SYNC_EACH_STEP_DEVICES", ())

    original = VAE.loss_terms
    calls = {"n": 0}

    def poisoned(self, x, x_hat, kl):
        calls["n"] += 1
        terms = original(self, x, x_hat, kl)
        if calls["n"] > 15:  # 10 batches per epoch: the NaN comes in the second epoch
            terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setattr(VAE, "loss_terms", poisoned)
    out = tmp_path / "run"
    value = "nan" if sync_each_step else "non-finite"
    with pytest.raises(TrainingError, match=rf"loss became {value} at epoch 2, batch 6.*epoch 1"):
        train(_config(out, epochs=3), progress=False)
    checkpoint = torch.load(out / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["epoch"] == 1
    assert not (out / REPORT_FILE).exists()
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


def test_refuses_to_overwrite_without_force_and_checks_resume_settings(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_config(out, epochs=1), progress=False)
    with pytest.raises(InputError, match="already holds a run; pass --resume"):
        train(_config(out, epochs=1), progress=False)
    with pytest.raises(InputError, match=r"other settings \(latent\)"):
        train(_config(out, epochs=2, latent=3), resume=True, progress=False)
    report = train(_config(out, epochs=1, seed=4), force=True, progress=False)
    assert report["settings"]["train"]["seed"] == 4
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        train(_config(out, batch_size=0), force=True, progress=False)


def test_cli_train_writes_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    from typer.testing import CliRunner

    from varloss.cli import app

    out = tmp_path / "cli"
    args = [
        "train",
        "--family",
        "dense",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--latent",
        "2",
        "--out",
        str(out),
        "--limit",
        "200",
        "--set",
        "hidden_sizes=[32]",
        "-q",
        "--no-report",
        "--threads",
        "1",
    ]
    monkeypatch.setattr("sys.argv", ["varloss", *args])  # what a shell would give the command
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "variance loss, reconstructed" in result.output
    folder = RunFolder(out)
    config = folder.read_json(CONFIG_FILE)
    assert config["model"]["hidden_sizes"] == [32]
    settings = folder.read_json(REPORT_FILE)["settings"]
    recorded = settings["command"]
    assert shlex.split(recorded) == ["varloss", *args]
    assert settings["torch_threads"] == 1
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "--force" in str(again.exception)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ddp_with_gloo_on_two_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun, 2 CPU ranks: training runs, rank 0 writes the run, and the sharded evaluation
    merged through VarianceLoss equals a single-process evaluation of the same weights, FID of
    the samples gathered from both ranks included."""
    from varloss.models import load_model

    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "varloss",
        "train",
        "--family",
        "dense",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--latent",
        "2",
        "--limit",
        "300",
        "--eval-limit",
        "121",
        "--batch-size",
        "30",
        "--set",
        "hidden_sizes=[64]",
        "--device",
        "cpu",
        "--out",
        str(out),
        "-q",
        "--no-report",
        "--fid",
        "on",
    ]
    cache = tmp_path / "cache"  # rank 0 trains the digits domain classifier here
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VARLOSS_DATA_DIR": str(cache)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = RunFolder(out).read_json(REPORT_FILE)
    assert report["settings"]["world_size"] == 2
    assert report["n_real"] == 121
    assert report["history"][-1]["loss"] < report["history"][0]["loss"]
    config = _config(out, epochs=2, eval_limit=121, device="cpu", seed=0, fid="on")
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(cache))
    single = evaluate(load_model(out), config)
    for key in MEASURE_KEYS:
        assert report[key] == pytest.approx(single[key], rel=1e-12), key
    for band, one in zip(report["spectrum"]["bands"], single["spectrum"]["bands"], strict=True):
        assert band["mse"] == pytest.approx(one["mse"], rel=1e-10)  # merged across ranks
    assert report["fid"]["n_generated"] == 121  # both ranks' samples
    assert report["fid"]["fid"] == pytest.approx(single["fid"]["fid"], rel=1e-6)


def test_fid_of_the_samples_is_reported_when_asked_or_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    auto = train(_config(tmp_path / "auto", epochs=1), progress=False)
    assert auto.get("fid") is None and "no cached domain classifier" in auto["fid_reason"]
    on = train(_config(tmp_path / "on", epochs=1, fid="on"), progress=False)
    assert on["fid"]["fid"] > 0 and on["fid"]["extractor"]["name"].startswith("domain")
    terms = on["fid"]["terms"]
    assert on["fid"]["fid"] == pytest.approx(
        terms["mean_term"] + terms["trace_real"] + terms["trace_generated"] - terms["cross_term"],
        rel=1e-9,
    )
    # now cached: "auto" reports it too, and the same samples give the same FID
    again = train(_config(tmp_path / "again", epochs=1), progress=False)
    assert again["fid"]["fid"] == on["fid"]["fid"]


def test_a_set_without_labels_says_why_it_has_no_domain_fid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An npz without labels: the run's report says the set has no labels (so no domain
    classifier) and points to --fid inception, under "auto" and "on"; the same file with labels
    gets the no-cached-classifier reason instead."""
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    images = np.random.default_rng(8).integers(0, 256, (40, 1, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "bare.npz", images=images)
    np.savez(tmp_path / "labelled.npz", images=images, labels=np.arange(40) % 4)
    tiny = dict(epochs=1, limit=None, eval_limit=None, batch_size=20, hyper={"hidden_sizes": [8]})
    for mode in ("auto", "on"):
        dataset = f"npz:{tmp_path / 'bare.npz'}"
        out = tmp_path / f"bare-{mode}"
        train(_config(out, dataset=dataset, fid=mode, **tiny), progress=False)
        report = RunFolder(out).read_json(REPORT_FILE)
        assert report.get("fid") is None and report["n_real"] == 40
        assert report["fid_reason"] == (
            f"not computed: {dataset!r} has no labels, so varloss has no domain classifier for "
            "it; pass --fid inception for the FID of the papers (fetch its weights once with "
            "`varloss weights fetch inception`)"
        )
    dataset = f"npz:{tmp_path / 'labelled.npz'}"
    train(_config(tmp_path / "labelled", dataset=dataset, **tiny), progress=False)
    report = RunFolder(tmp_path / "labelled").read_json(REPORT_FILE)
    assert report.get("fid") is None
    assert report["fid_reason"].startswith(
        f"not computed: no cached domain classifier for {dataset!r}"
    )


def test_bf16_autocast_trains_close_to_float32(tmp_path: Path) -> None:
    """--bf16 (meant for GPUs) runs on CPU too: the likelihood stays float32 (see losses), so
    the losses follow the float32 run closely and the report records the setting."""
    plain = train(_config(tmp_path / "fp32", epochs=1), progress=False)
    mixed = train(_config(tmp_path / "bf16", epochs=1, bf16=True), progress=False)
    assert mixed["settings"]["train"]["bf16"] is True
    loss_fp32, loss_bf16 = plain["history"][0]["loss"], mixed["history"][0]["loss"]
    assert torch.isfinite(torch.tensor(loss_bf16))
    assert loss_bf16 == pytest.approx(loss_fp32, rel=0.02)
    assert loss_bf16 != loss_fp32  # autocast really ran in bfloat16
    # The saved weights are float32 whatever the autocast dtype.
    weights = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}


def _torch_compile_works() -> str | None:
    """None when torch.compile runs here, else why not (inductor needs a C++ toolchain)."""
    try:
        compiled = torch.compile(lambda x: torch.relu(x) * 2)
        compiled(torch.randn(4))
    except Exception as error:  # noqa: BLE001 - any toolchain failure means: cannot test here
        return f"torch.compile does not run on this machine: {type(error).__name__}: {error}"
    return None


@pytest.mark.slow
def test_compiled_training_follows_eager_and_resumes_exactly(tmp_path: Path) -> None:
    """--compile (torch.compile; inductor needs a C compiler, present here and in CI images).
    Fused kernels round differently, so losses follow the eager run closely (0.2% here, while
    another seed moves them 0.6-2.5%); resuming a compiled run equals running it straight."""
    reason = _torch_compile_works()
    if reason:
        pytest.skip(reason)
    eager = train(_config(tmp_path / "eager", limit=120), progress=False)
    straight = train(_config(tmp_path / "straight", limit=120, compile=True), progress=False)
    train(_config(tmp_path / "resumed", epochs=1, limit=120, compile=True), progress=False)
    resumed = train(
        _config(tmp_path / "resumed", limit=120, compile=True), resume=True, progress=False
    )
    for ours, reference in zip(straight["history"], eager["history"], strict=True):
        assert ours["loss"] == pytest.approx(reference["loss"], rel=5e-3)
    assert [row["loss"] for row in resumed["history"]] == [
        row["loss"] for row in straight["history"]
    ]
    assert {k: resumed[k] for k in MEASURE_KEYS} == {k: straight[k] for k in MEASURE_KEYS}
    # Checkpoints hold the plain module's names (no torch.compile prefix): they load eagerly.
    weights = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert not any(name.startswith("_orig_mod") for name in weights)


# ----------------------------------------------------------------------------------------------
# The run folder guards itself: one writer at a time, damage named, never trained on


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the folder's lock (as a running `varloss train` does)."""
    script = (
        "import sys\nfrom varloss.runs import RunFolder\n"
        f"with RunFolder({str(folder)!r}).lock():\n"
        "    print('locked', flush=True)\n    sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_train_into_a_folder_in_use_is_refused_at_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = _hold_lock(out)
    try:
        with pytest.raises(InputError, match=r"run is in use by another varloss process"):
            train(_config(out, epochs=1), progress=False)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _files(out) == {}  # nothing written by the refused run
    report = train(_config(out, epochs=1), progress=False)  # the folder is free again
    assert RunFolder(out).read_json(REPORT_FILE)["mse"] == report["mse"]


@pytest.mark.slow
def test_two_concurrent_cli_trains_into_one_folder(tmp_path: Path) -> None:
    """Two real `varloss train` processes: the second stops at once, the first finishes."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "varloss", "train", "--family", "dense", "--dataset", "digits"]
    args += ["--latent", "2", "--limit", "300", "--batch-size", "30", "--set", "hidden_sizes=[64]"]
    args += ["--out", str(out), "-q", "--no-report", "--threads", "1", "--fid", "off"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [*args, "--epochs", "1000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT_FILE).exists():  # the first one is training, lock held
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.1)
        second = subprocess.run(
            [*args, "--epochs", "1", "--force"], env=env, capture_output=True, text=True
        )
        assert first.poll() is None, "the first run ended too soon for this test: more --epochs"
        assert second.returncode != 0
        assert "is in use by another varloss process" in second.stderr + second.stdout
        assert "Traceback" not in second.stderr
    finally:
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert RunFolder(out).read_json(REPORT_FILE)["settings"]["train"]["epochs"] == 1000


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_checkpoint_is_refused_on_resume(tmp_path: Path, damage: str) -> None:
    out = tmp_path / "run"
    train(_config(out, epochs=1), progress=False)
    path = out / CHECKPOINT_FILE
    data = path.read_bytes()
    if damage == "flip":  # one byte inside the weights: torch.load alone would not notice
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :])
    else:
        path.write_bytes(data[: len(data) // 3])
    before = _files(out)
    with pytest.raises(InputError, match=r"checkpoint/last.pt is damaged .*afresh with --force"):
        train(_config(out, epochs=2), resume=True, progress=False)
    assert _files(out) == before  # nothing trained, nothing rewritten


def test_an_unreadable_checkpoint_without_manifest_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_config(out, epochs=1), progress=False)
    (out / MANIFEST_FILE).unlink()  # a folder from before manifests: nothing to check against
    (out / CHECKPOINT_FILE).write_bytes((out / CHECKPOINT_FILE).read_bytes()[:200])
    with pytest.raises(InputError, match=r"last.pt could not be read .*afresh with --force"):
        train(_config(out, epochs=2), resume=True, progress=False)


@pytest.mark.parametrize("sealed", [True, False], ids=["manifest", "folder-before-manifests"])
def test_a_truncated_model_is_named_and_rebuilt_from_the_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sealed: bool
) -> None:
    from varloss.models import load_model

    out = tmp_path / "run"
    report = train(_config(out, epochs=2), progress=False)
    if not sealed:
        (out / MANIFEST_FILE).unlink()
    weights = out / MODEL_FILE
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    named = "is damaged" if sealed else "could not be read as a safetensors file"
    with pytest.raises(InputError, match=rf"model.safetensors {named} .*varloss train --resume"):
        load_model(out)
    with caplog.at_level("WARNING", logger="varloss"):
        rebuilt = train(_config(out, epochs=2), resume=True, progress=False)
    found = "model.safetensors is damaged" if sealed else "has no manifest.json"
    assert found in caplog.text
    assert f"rebuilding the run from {out / CHECKPOINT_FILE} (epoch 2)" in caplog.text
    assert weights.read_bytes() == original  # the checkpoint held the final weights
    assert {k: rebuilt[k] for k in MEASURE_KEYS} == {k: report[k] for k in MEASURE_KEYS}
    assert all(RunFolder(out).verify(name) for name in (MODEL_FILE, REPORT_FILE, CHECKPOINT_FILE))


def test_a_broken_config_or_manifest_is_one_sentence(tmp_path: Path) -> None:
    from varloss.models import load_model

    out = tmp_path / "run"
    train(_config(out, epochs=1), progress=False)
    (out / CONFIG_FILE).write_text('{"family": "dense", "model": ')
    with pytest.raises(InputError, match=r"config.json is damaged \(its SHA-256"):
        load_model(out)
    (out / MANIFEST_FILE).write_text('{"files": ')
    for attempt in (
        lambda: load_model(out),
        lambda: train(_config(out, epochs=1), resume=True, progress=False),
    ):
        with pytest.raises(InputError, match=r"manifest.json is damaged .*delete it"):
            attempt()


def test_settings_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    assert (TrainConfig(fid=True).fid, TrainConfig(fid=False).fid) == ("on", "off")
    for bad, message in (
        ({"epochs": True}, "epochs must be a positive integer"),
        ({"limit": 1}, "limit must be an integer of at least 2"),
        ({"lr": float("inf")}, "lr must be a positive number"),
        ({"schedule": "linear"}, "schedule must be one of constant, cosine, step"),
        ({"fid": "maybe"}, "fid must be one of auto, on, off"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"hyper": "hidden_sizes=64"}, "hyper must be a dict"),
    ):
        with pytest.raises(InputError, match=message):
            train(_config(tmp_path / "run", **bad), progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(InputError, match="no-such-set"):  # found out once the folder is locked
        train(_config(tmp_path / "run", dataset="no-such-set"), progress=False)
    assert not (tmp_path / "run").exists()
