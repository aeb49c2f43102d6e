"""Training to convergence: --patience stops where the rule says, keeps the best epoch's weights,
records its validation split, and resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from varloss._hashing import sha256_json
from varloss.data import load
from varloss.errors import InputError
from varloss.pipelines.early_stopping import split_validation, validation_loss
from varloss.pipelines.study.spec import parse_spec
from varloss.pipelines.train import TrainConfig, train
from varloss.runs import CHECKPOINT_FILE, HISTORY_FILE, MODEL_FILE, REPORT_FILE, RunFolder
from varloss.variance.protocol import Stream, stream_seed

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(out: Path, **overrides) -> TrainConfig:
    values = dict(
        family="dense",
        dataset="digits",
        epochs=30,
        latent=2,
        seed=3,
        out=str(out),
        limit=300,
        eval_limit=120,
        batch_size=30,
        lr=3e-2,  # large: the validation loss turns noisy after a few epochs and stops improving
        patience=2,
        fid="off",
        hyper={"hidden_sizes": [64]},
    )
    values.update(overrides)
    return TrainConfig(**values)


def _stop_epoch(losses: list[float], patience: int, min_delta: float = 0.0) -> tuple[int, int]:
    """(stopped epoch, best epoch) of the patience rule, recomputed from the losses: a gain counts
    when it beats the last counted loss by more than min_delta of it; the best is the lowest."""
    reference, since = float("inf"), 0
    for epoch, loss in enumerate(losses, start=1):
        if reference == float("inf") or loss < reference * (1 - min_delta):
            reference, since = loss, 0
        else:
            since += 1
            if since >= patience:
                return epoch, losses.index(min(losses[:epoch])) + 1
    return len(losses), losses.index(min(losses)) + 1


def test_patience_stops_where_the_rule_says_and_keeps_the_best_weights(tmp_path: Path) -> None:
    config = _config(tmp_path / "run")
    report = train(config, progress=False)
    losses = [row["val_loss"] for row in report["history"]]
    stopped, best = _stop_epoch(losses, config.patience)
    assert stopped < config.epochs and best < stopped  # it stopped early, after a better epoch
    assert (report["stopped_epoch"], report["best_epoch"]) == (stopped, best)
    assert report["early_stopped"] is True and len(losses) == stopped
    assert report["best_validation_loss"] == min(losses)
    # The split: 10% of the 300 images, seeded, recorded; the rest trained on.
    split = report["settings"]["validation"]
    # seeded from the run's validation-split stream: epoch_seed(3, -3), as before streams had names
    assert split == {"fraction": 0.1, "images": 30, "seed": 3 * 1_000_003 - 3 * 7919 + 17}
    assert split["seed"] == stream_seed(3, Stream.VALIDATION_SPLIT)
    assert report["settings"]["train_images"] == 270
    # The saved model is the best epoch's, not the last one's: its validation loss, recomputed
    # from model.safetensors, is the best; the checkpoint's last weights give the last epoch's.
    folder = RunFolder(config.out)
    images = load("digits", "train", limit=300).images
    _, held_out, record = split_validation(images, config)
    assert record == split
    model = _model(config)
    model.load_state_dict(load_file(folder.file(MODEL_FILE)))
    noise_seed = stream_seed(config.seed, Stream.VALIDATION_DRAWS)
    kept = validation_loss(model, held_out, noise_seed, torch.autocast("cpu", enabled=False))
    assert kept["val_loss"] == pytest.approx(min(losses), rel=1e-6)
    model.load_state_dict(folder.read_torch(CHECKPOINT_FILE)["model"])
    last = validation_loss(model, held_out, noise_seed, torch.autocast("cpu", enabled=False))
    assert last["val_loss"] == pytest.approx(losses[-1], rel=1e-6) and losses[-1] > min(losses)
    # history.csv shows the validation loss of every epoch.
    rows = folder.read_csv(HISTORY_FILE)
    assert [float(row["val_loss"]) for row in rows] == pytest.approx(losses, rel=1e-12)


def test_min_delta_stops_a_creeping_loss_and_still_keeps_the_lowest(tmp_path: Path) -> None:
    # lr 3e-3: the loss keeps creeping down for many epochs, so plain patience runs to the cap
    # while a 2% min_delta stops once the gains fall below 2% of the loss.
    creeping = dict(lr=3e-3, epochs=12, patience=2)
    plain = train(_config(tmp_path / "plain", **creeping), progress=False)
    strict = train(_config(tmp_path / "strict", min_delta=0.02, **creeping), progress=False)
    losses = [row["val_loss"] for row in strict["history"]]
    stopped, best = _stop_epoch(losses, 2, 0.02)
    assert (strict["stopped_epoch"], strict["best_epoch"]) == (stopped, best)
    assert strict["early_stopped"] and stopped < plain["stopped_epoch"]
    assert strict["best_validation_loss"] == min(losses)
    # Same seed, same epochs so far: the rule changes when training stops, not what it trains.
    assert losses == [row["val_loss"] for row in plain["history"][:stopped]]
    assert strict["settings"]["train"]["min_delta"] == 0.02


def _model(config: TrainConfig) -> torch.nn.Module:
    from varloss.models import create_model

    return create_model("dense", (1, 8, 8), config.latent, hidden_sizes=(64,)).eval()


def test_resume_with_patience_is_exact(tmp_path: Path) -> None:
    whole = train(_config(tmp_path / "whole"), progress=False)
    assert whole["early_stopped"] and whole["stopped_epoch"] > 3
    part = _config(tmp_path / "part", epochs=3)
    assert not train(part, progress=False)["early_stopped"]  # the cap, not patience
    resumed = train(_config(tmp_path / "part"), resume=True, progress=False)
    assert resumed["history"] == [
        {**row, "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"]}
        for row, r in zip(whole["history"], resumed["history"], strict=True)
    ]
    for key in ("stopped_epoch", "best_epoch", "best_validation_loss", "mse", "var_generated"):
        assert resumed[key] == whole[key], key
    weights = [load_file(RunFolder(tmp_path / name).file(MODEL_FILE)) for name in ("whole", "part")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # A run that patience stopped is finished: resuming with a higher cap trains no further.
    again = train(_config(tmp_path / "part", epochs=50), resume=True, progress=False)
    assert again["stopped_epoch"] == whole["stopped_epoch"]
    assert RunFolder(tmp_path / "part").read_json(REPORT_FILE) == again


def test_cli_patience_stops_a_run_that_does_not_move(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from varloss.cli import app

    out = tmp_path / "still"
    # lr 1e-12: Adam's steps are below float32 resolution, the weights never change, so the
    # validation loss repeats exactly: epoch 1 is the best and patience 2 stops at epoch 3.
    args = ["train", "--family", "dense", "--dataset", "digits", "--epochs", "10", "--latent", "2"]
    args += ["--limit", "200", "--eval-limit", "60", "--lr", "1e-12", "--patience", "2"]
    args += ["--validation", "0.25", "--set", "hidden_sizes=[16]", "--out", str(out)]
    args += ["-q", "--no-report", "--fid", "off"]
    monkeypatch.setattr("sys.argv", ["varloss", *args])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = RunFolder(out)
    report = folder.read_json(REPORT_FILE)
    assert (report["stopped_epoch"], report["best_epoch"], report["early_stopped"]) == (3, 1, True)
    assert report["settings"]["validation"]["images"] == 50
    assert report["settings"]["train"]["patience"] == 2
    rows = folder.read_csv(HISTORY_FILE)
    assert len({row["val_loss"] for row in rows}) == 1 and len(rows) == 3


def test_patience_settings_are_checked_and_keep_earlier_study_ids(tmp_path: Path) -> None:
    for bad, message in [
        ({"patience": 0}, "patience must be a positive integer"),
        ({"patience": 2.5}, "patience must be a positive integer"),
        ({"validation": 1.5}, "validation must be a fraction"),
        ({"validation": True}, "validation must be a fraction"),
        ({"min_delta": -0.1}, "min_delta must be a relative improvement"),
        ({"min_delta": 1}, "min_delta must be a relative improvement"),
    ]:
        with pytest.raises(InputError, match=message):
            _config(tmp_path / "x", **bad).validate()
    with pytest.raises(InputError, match="leaves 0 for validation"):
        train(_config(tmp_path / "tiny", limit=4, validation=0.05), progress=False)
    # Checkpoints written before these settings existed hold identities without them.
    earlier = {"family", "dataset", "latent", "seed", "loss", "limit", "batch_size", "lr"}
    earlier |= {"bf16", "hyper", "eval_limit"}  # and `schedule`, left out at "constant"
    assert set(TrainConfig(validation=0.3, min_delta=0.01).identity()) == earlier
    # a checkpoint that recorded the constant schedule (before it was a study field) resumes
    recorded = {**TrainConfig().identity(), "schedule": "constant"}
    assert TrainConfig().trains_like(recorded)
    assert not TrainConfig().trains_like({**recorded, "schedule": "cosine"})
    assert "schedule" in TrainConfig(schedule="cosine").identity()
    assert {"patience", "validation"} <= set(TrainConfig(patience=1, validation=0.3).identity())
    base = {"family": "dense", "dataset": "digits", "latent": 2, "epochs": 1}
    plain, patient, same = (
        parse_spec({"runs": [run]}).runs[0]
        for run in (base, {**base, "patience": 3}, {**base, "validation": 0.2})
    )
    before = {**base, "loss": "bernoulli", "seed": 0, "limit": None, "batch_size": None}
    digest = sha256_json({**before, "lr": None, "hyper": {}}, 8)
    assert plain.run_id == same.run_id == f"dense-digits-z2-e1-bernoulli-s0-{digest}"
    assert patient.run_id != plain.run_id
    constant, cosine = (
        parse_spec({"runs": [{**base, "schedule": schedule}]}).runs[0]
        for schedule in ("constant", "cosine")
    )
    assert constant.run_id == plain.run_id != cosine.run_id
    assert cosine.train_config(out="x").schedule == "cosine"
    assert patient.train_config(out="x").patience == 3
    with pytest.raises(InputError, match="patience must be"):
        parse_spec({"runs": [{**base, "patience": -1}]})
