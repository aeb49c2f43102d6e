"""`correct` shows the second stage's epochs: the two-stage sampler tells `on_epoch` after each
pass over the codes, and correct's bar shows it. Counts are checked, never times."""

from __future__ import annotations

import math

import pytest
import torch
from _digits_vae import digits_images, untrained_vae

from varloss.models import save_model
from varloss.pipelines import correct as correct_pipeline
from varloss.runs import RunFolder
from varloss.samplers.two_stage import TwoStageSampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_second_stage_tells_each_epoch_and_fits_the_same() -> None:
    images = digits_images()[:300]
    model = untrained_vae()
    told: list[tuple[int, int]] = []
    shown = TwoStageSampler(steps=10, train_batch_size=64, hidden=(16,), n_renorm=200)
    shown.on_epoch = lambda epoch, epochs: told.append((epoch, epochs))
    shown.fit(model, images)
    # 270 codes (30 held out) in batches of 64: 4 full batches per epoch, 10 steps make 3 epochs
    epochs = math.ceil(10 / (270 // 64))
    assert told == [(epoch, epochs) for epoch in range(1, epochs + 1)]
    quiet = TwoStageSampler(steps=10, train_batch_size=64, hidden=(16,), n_renorm=200)
    quiet.fit(model, images)  # the same fit without anyone told
    assert quiet.final_mse == shown.final_mse and quiet.final_kl == shown.final_kl
    for key, value in quiet.network.state_dict().items():
        assert torch.equal(value, shown.network.state_dict()[key]), key


class RecordingBar:
    """Stands in for correct's tqdm bar over the methods: keeps every postfix it was given."""

    def __init__(self, methods, **options) -> None:
        self.methods, self.postfixes = list(methods), []

    def __iter__(self):
        return iter(self.methods)

    def set_postfix(self, **values) -> None:
        self.postfixes.append(values)


def test_correct_shows_the_second_stage_epochs(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    bars: list[RecordingBar] = []

    def recording_bar(methods, **options):
        bars.append(RecordingBar(methods, **options))
        return bars[-1]

    monkeypatch.setattr(correct_pipeline, "progress_bar", recording_bar)
    run = tmp_path / "run"
    save_model(untrained_vae(), run, extra={"train": {"dataset": "digits", "limit": 300}})
    RunFolder(run).seal()
    params = {"two-stage": {"steps": 12, "train_batch_size": 100, "hidden": [16]}}
    correct_pipeline.correct(
        run, "two-stage", tmp_path / "out", n_samples=100, sampler_params=params, fid="off"
    )
    # the 300 training images' codes less the 30 held out for validation: 2 batches a pass
    epochs = math.ceil(12 / (270 // 100))
    shown = [p for p in bars[0].postfixes if p.get("method") == "two-stage" and "epoch" in p]
    assert [p["epoch"] for p in shown] == [f"{k}/{epochs}" for k in range(1, epochs + 1)]


@pytest.mark.parametrize("progress", [True, False])
def test_correct_s_fid_shows_its_feature_bars_when_correct_shows_progress(
    tmp_path, monkeypatch: pytest.MonkeyPatch, progress: bool
) -> None:
    """An Inception FID reads the test split and the samples for tens of minutes on a CPU: the
    FID is asked for its feature bars (images/s) exactly when correct shows its own."""
    asked: list[dict] = []

    def recording_fid(real, generated, **options):
        asked.append(options)
        return None, "not computed (recorded)"

    monkeypatch.setattr(correct_pipeline, "fid_or_reason", recording_fid)
    run = tmp_path / "run"
    save_model(untrained_vae(), run, extra={"train": {"dataset": "digits", "limit": 300}})
    RunFolder(run).seal()
    correct_pipeline.correct(
        run, "prior", tmp_path / "out", n_samples=50, fid="on", progress=progress
    )
    assert [options["progress"] for options in asked] == [progress]
