"""The second stage trained in a worker process (`varloss._background`): the same weights bit for
bit as in this process, its epochs replayed, failures told or fallen back from, nothing left
behind; and `correct` gives the same report with and without it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _digits_vae import digits_images, untrained_vae

from varloss._background import Worker
from varloss.models import save_model
from varloss.pipelines import correct as correct_pipeline
from varloss.pipelines import remedy_fits
from varloss.runs import RunFolder
from varloss.samplers import SharedFit, two_stage
from varloss.samplers.second_stage import SecondStageSettings, train_second_stage
from varloss.samplers.two_stage import TwoStageSampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = SecondStageSettings(
    dim=4,
    latent_dim=3,
    hidden=(8,),
    steps=20,
    warmup=0.2,
    train_batch_size=32,
    lr=2e-3,
    validation=0.1,
    patience=3,
    min_delta=1e-3,
    seed=5,
)


def _codes() -> torch.Tensor:
    return torch.randn(200, 4, generator=torch.Generator().manual_seed(0))


def test_a_worker_returns_the_call_s_value_and_replays_its_progress():
    told: list[tuple[int, int]] = []
    with Worker() as worker:
        worker.submit(
            "varloss.samplers.second_stage:train_second_stage",
            callback="on_epoch",
            codes=_codes(),
            settings=SETTINGS,
        )
        fitted = worker.result(lambda epoch, epochs: told.append((epoch, epochs)))
        folder = worker._folder
    here: list[tuple[int, int]] = []
    alone = train_second_stage(_codes(), SETTINGS, lambda e, n: here.append((e, n)))
    # 180 codes after the 20 held out, batches of 32: 5 a pass, 20 steps make 4 epochs
    assert told == here == [(epoch, math.ceil(20 / 5)) for epoch in range(1, 5)]
    assert fitted.final_mse == alone.final_mse and fitted.epochs_trained == alone.epochs_trained
    for key, value in alone.state.items():
        assert torch.equal(fitted.state[key], value), key
    assert not folder.exists()  # the worker's files go with it


def test_a_failed_call_raises_with_the_worker_s_own_words():
    with Worker() as worker:
        worker.submit("varloss.samplers.second_stage:train_second_stage", codes=_codes())
        with pytest.raises(RuntimeError, match=r"train_second_stage failed \(exit code 1\)"):
            worker.result()
        try:
            worker.result()
        except RuntimeError as error:
            assert "TypeError" in str(error) and "settings" in str(error)  # the child's traceback


def test_a_worker_runs_one_call_and_nothing_is_collected_unsubmitted():
    with Worker() as worker:
        with pytest.raises(RuntimeError, match="nothing was submitted"):
            worker.result()
        worker.submit("json:dumps", obj=[1, 2])
        with pytest.raises(RuntimeError, match="already runs json:dumps"):
            worker.submit("json:dumps", obj=[3])
        assert json.loads(worker.result()) == [1, 2]


def test_closing_stops_a_running_call_and_a_worker_without_a_job_exits_by_itself():
    worker = Worker()
    long = SecondStageSettings(**{**SETTINGS.__dict__, "steps": 10**7, "patience": 0})
    worker.submit("varloss.samplers.second_stage:train_second_stage", codes=_codes(), settings=long)
    process, folder = worker._process, worker._folder
    worker.close()
    assert process.poll() is not None and not folder.exists()
    idle = Worker()
    idle._process.stdin.close()  # the caller goes away without a job
    assert idle._process.wait(timeout=60) == 0
    idle.close()


def _two_stage(**params) -> TwoStageSampler:
    return TwoStageSampler(steps=40, train_batch_size=64, hidden=(16,), n_renorm=200, **params)


@pytest.fixture
def fitted_here(monkeypatch: pytest.MonkeyPatch):
    """(model, images, the second stage fitted in this process), with so small a fit still sent
    to a worker when one is given."""
    monkeypatch.setattr(two_stage, "BACKGROUND_ROWS", 0)
    images = digits_images()[:300]
    model = untrained_vae()
    return model, images, _two_stage().fit(model, images)


def _assert_same_state(here: TwoStageSampler, there: TwoStageSampler) -> None:
    for key, value in here._state().items():
        assert torch.equal(there._state()[key], value), key


def test_the_two_stage_sampler_fits_the_same_in_a_worker(fitted_here):
    model, images, here = fitted_here
    with Worker() as worker:
        shared = SharedFit(model, images, worker)
        assert _two_stage().start(shared)
        assert _two_stage(renormalize=False).start(shared)  # the same second stage: shared
        assert not _two_stage(seed=1).start(shared)  # another one: the worker is taken
        told: list[tuple[int, int]] = []
        there = _two_stage()
        there.on_epoch = lambda epoch, epochs: told.append((epoch, epochs))
        there.fit(model, images, shared)
    assert [epoch for epoch, _ in told] == list(range(1, there.epochs_trained + 1))
    assert there.settings() == here.settings()
    _assert_same_state(here, there)


def test_a_failed_worker_falls_back_to_training_here(fitted_here):
    model, images, here = fitted_here
    with Worker() as worker:
        shared = SharedFit(model, images, worker)
        assert _two_stage().start(shared)
        worker._process.kill()  # as if the machine had killed it
        with pytest.warns(UserWarning, match="trained in this process"):
            there = _two_stage().fit(model, images, shared)
    _assert_same_state(here, there)


def _run(tmp_path):
    run = tmp_path / "run"
    save_model(untrained_vae(), run, extra={"train": {"dataset": "digits", "limit": 300}})
    RunFolder(run).seal()
    return run


PARAMS = {
    name: {"steps": 40, "train_batch_size": 64, "hidden": [16], "n_renorm": 200}
    for name in ("two-stage", "two-stage-raw")
}


def test_correct_gives_the_same_report_with_the_second_stage_in_a_worker(
    tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(two_stage, "BACKGROUND_ROWS", 0)
    monkeypatch.setattr(remedy_fits, "available_cores", lambda: 2)
    workers: list[Worker] = []

    class Recorded(Worker):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            workers.append(self)

    monkeypatch.setattr(remedy_fits, "take_worker", lambda **kw: Recorded(**kw))
    run = _run(tmp_path)
    reports = {}
    for background in (False, True):
        reports[background] = correct_pipeline.correct(
            run,
            "two-stage,two-stage-raw,temperature",
            tmp_path / f"out-{background}",
            n_samples=100,
            sampler_params=PARAMS,
            fid="off",
            progress=False,
            background=background,
        )
    assert len(workers) == 1 and workers[0].target.endswith(":train_second_stage")
    assert not workers[0]._folder.exists()
    for name, row in reports[False]["methods"].items():
        other = reports[True]["methods"][name]
        for key in ("pixel_frechet", "var_generated", "gap_closed", "spectral_error"):
            assert other[key] == row[key], (name, key)
    assert list(reports[True]["methods"]) == list(reports[False]["methods"])
    assert [reports[b]["settings"]["second_stage_worker"] for b in (False, True)] == [False, True]
    # fitted again into the same folder: the saved second stage serves, no worker starts
    correct_pipeline.correct(
        run,
        "two-stage,two-stage-raw",
        tmp_path / "out-True",
        n_samples=100,
        sampler_params=PARAMS,
        fid="off",
        progress=False,
    )
    assert len(workers) == 1


def test_correct_starts_no_worker_on_one_core_for_a_small_second_stage_or_alone(
    tmp_path, monkeypatch: pytest.MonkeyPatch
):
    started: list[int] = []
    monkeypatch.setattr(remedy_fits, "take_worker", lambda **_: started.append(1))
    run = _run(tmp_path)
    monkeypatch.setattr(remedy_fits, "available_cores", lambda: 2)
    options = {"n_samples": 100, "sampler_params": PARAMS, "fid": "off", "progress": False}
    methods = "two-stage,temperature"
    correct_pipeline.correct(run, methods, tmp_path / "small", **options)  # 40 x 64 rows
    monkeypatch.setattr(two_stage, "BACKGROUND_ROWS", 0)
    # the second stage alone (the prior is nothing to fit): nothing to overlap the worker with
    correct_pipeline.correct(run, "two-stage,two-stage-raw", tmp_path / "alone", **options)
    monkeypatch.setattr(remedy_fits, "available_cores", lambda: 1)
    correct_pipeline.correct(run, methods, tmp_path / "one-core", **options)
    assert started == []


def test_the_cli_turns_the_worker_off_with_no_background(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
):
    from test_cli import invoke

    workers: list[int] = []
    monkeypatch.setattr(two_stage, "BACKGROUND_ROWS", 0)
    monkeypatch.setattr(remedy_fits, "available_cores", lambda: 2)
    monkeypatch.setattr(remedy_fits, "take_worker", lambda **_: workers.append(1))
    run = _run(tmp_path)
    methods = "two-stage,temperature"  # something to fit meanwhile: a worker would start
    args = ["correct", run, "--method", methods, "--stage2-steps", "20", "--n-samples", "100"]
    code, _, err = invoke(monkeypatch, capsys, *args, "--fid", "off", "--no-background")
    assert code == 0, err
    assert workers == []


def test_a_worker_whose_caller_dies_stops_and_removes_its_files(tmp_path):
    import subprocess
    import sys
    import time

    # a caller process that starts a long second stage in a worker, says where, and is killed
    script = f"""
import sys, torch
sys.path.insert(0, {str(tmp_path)!r})
from varloss._background import Worker
from varloss.samplers.second_stage import SecondStageSettings
settings = SecondStageSettings(4, 3, (8,), 10**7, 0.2, 32, 2e-3, 0.0, 0, 1e-3, 5)
worker = Worker()
worker.submit("varloss.samplers.second_stage:train_second_stage", callback="on_epoch",
              codes=torch.randn(200, 4), settings=settings)
print(worker._folder, worker._process.pid, flush=True)
import time; time.sleep(600)
"""
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    folder, pid = caller.stdout.readline().split()
    caller.kill()
    caller.wait()
    caller.stdout.close()
    for _ in range(600):  # the worker notices at its next epoch (a fraction of a second)
        if not Path(folder).exists():
            break
        time.sleep(0.1)
    assert not Path(folder).exists()
    assert _gone(int(pid), seconds=10.0)


def _gone(pid: int, seconds: float) -> bool:
    """Whether process `pid` ends within `seconds`: no longer there, or a zombie (exited, and
    not yet reaped by whichever process adopted it: that depends on the machine's init)."""
    import time

    import psutil

    for _ in range(int(seconds / 0.1)):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_warm_worker_is_taken_by_the_same_arguments_only(monkeypatch: pytest.MonkeyPatch):
    from varloss import _background

    monkeypatch.setattr(_background, "_WARM", {})
    monkeypatch.setattr(_background, "available_cores", lambda: 2)
    _background.warm_up(preload=("json",))
    warm = _background._WARM[(1, ("json",))]
    other = _background.take_worker(preload=("math",))  # not the warm one's arguments
    try:
        assert other is not warm and _background._WARM == {(1, ("json",)): warm}
        taken = _background.take_worker(preload=["json"])
        assert taken is warm and _background._WARM == {}
        taken.submit("json:dumps", obj={"a": 1})
        assert json.loads(taken.result()) == {"a": 1}
    finally:
        other.close()
        warm.close()
        warm.close()  # again, as at exit: nothing
    monkeypatch.setattr(_background, "available_cores", lambda: 1)
    _background.warm_up(preload=("json",))  # one core: no worker to overlap anything
    assert _background._WARM == {}


def test_the_cli_warms_the_second_stage_s_worker_up_before_its_imports(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
):
    from test_cli import invoke

    from varloss.cli import correct as correct_cli

    warmed: list[tuple[str, ...]] = []
    monkeypatch.setattr(correct_cli, "warm_up", lambda preload: warmed.append(preload))
    run = _run(tmp_path)
    options = ["--stage2-steps", "20", "--n-samples", "100", "--fid", "off", "--no-report"]
    for methods, flags in (("temperature", []), ("two-stage", ["--no-background"])):
        args = ["correct", run, "--method", methods, *options, *flags]
        code, _, err = invoke(monkeypatch, capsys, *args)
        assert code == 0, err
    assert warmed == []
    code, _, err = invoke(monkeypatch, capsys, "correct", run, "--method", "two-stage", *options)
    assert code == 0, err
    assert warmed == [TwoStageSampler.background_modules]


def test_a_worker_s_progress_never_fills_the_pipe_while_nobody_collects():
    # 64 codes in batches of 32: 2 steps an epoch, 8000 steps make 4000 progress lines (~90 kB,
    # more than a pipe holds): the worker must finish before anyone asks for its result
    many = SecondStageSettings(**{**SETTINGS.__dict__, "steps": 8000, "patience": 0})
    many = SecondStageSettings(**{**many.__dict__, "validation": 0.0, "hidden": (4,)})
    with Worker() as worker:
        worker.submit(
            "varloss.samplers.second_stage:train_second_stage",
            callback="on_epoch",
            codes=_codes()[:64],
            settings=many,
        )
        assert worker._process.wait(timeout=300) == 0
        told: list[int] = []
        worker.result(lambda epoch, epochs: told.append(epoch))
    assert told == list(range(1, 4001))
