"""The study's orchestration with a stand-in trainer: skip, resume after Ctrl-C, failures, the
process pool and the Dask executors gather the same rows. (The real trainer is exercised in
test_study_runs.py; here every number is known in advance, so rows are checked exactly.)"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

import varloss.pipelines.study.run as study_run
from varloss.errors import InputError
from varloss.pipelines.study import executors, parse_spec, run_study
from varloss.records import ResultsRow
from varloss.runs import (
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    REPORT_FILE,
    RunFolder,
)
from varloss.train_config import TrainConfig

SPEC = """
name: fake
defaults: {dataset: digits, epochs: 1, limit: 50}
grid:
  family: [dense, conv, resnet, draw]
  latent: [2, 4]
"""


CALLS: list[tuple[str, bool]] = []
INTERRUPT: set[str] = set()


def expected_metrics(family: str, latent: int) -> dict[str, float]:
    offset = ["dense", "conv", "resnet", "draw"].index(family)
    mse = 0.01 + 0.002 * offset + 0.001 * latent
    bias2 = 1e-4 * (offset + 1)
    cov = 0.05 * mse
    loss = mse - bias2 + cov
    return {
        "mse": mse,
        "var_real": 0.09,
        "var_reconstructed": 0.09 - loss,
        "var_generated": 0.09 - 1.3 * mse,
        "variance_loss_reconstructed": loss,
        "variance_loss_generated": 1.3 * mse,
        "bias2": bias2,
        "cov_term": cov,
    }


def fake_train(
    config: TrainConfig,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    threads: int | str | None = None,
) -> dict:
    folder = RunFolder(config.out)
    CALLS.append((folder.path.name, resume))
    folder.file(CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    with folder.atomic_path(CHECKPOINT_FILE) as temporary:
        temporary.write_bytes(b"state")
    if config.family in INTERRUPT:
        INTERRUPT.discard(config.family)
        raise KeyboardInterrupt  # Ctrl-C in the middle of this run: a checkpoint, no report
    folder.write_json(CONFIG_FILE, {"family": config.family, "model": {"loss": "bernoulli"}})
    with folder.atomic_path(MODEL_FILE) as temporary:
        temporary.write_bytes(b"weights")
    calls = {
        "pid": os.getpid(),
        "resume": resume,
        "threads": torch.get_num_threads(),
        "threads_asked": threads,
        "progress": progress,
    }
    folder.write_json("calls.json", calls)
    report = {**expected_metrics(config.family, config.latent), "train_seconds": 2.5}
    folder.write_json(REPORT_FILE, report)
    return report


@pytest.fixture()
def fake_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executors, "train", fake_train)
    CALLS.clear()
    INTERRUPT.clear()


def _check_rows(rows: list[ResultsRow], spec_text: str = SPEC) -> None:
    runs = parse_spec(spec_text).runs
    assert [r.run_id for r in rows] == [r.run_id for r in runs]
    for row, run in zip(rows, runs, strict=True):
        want = expected_metrics(run.family, run.latent)
        assert {k: getattr(row, k) for k in want} == want
        assert row.train_seconds == 2.5 and row.loss == run.loss


def test_interrupted_study_continues_with_the_same_command(
    fake_trainer: None, tmp_path: Path
) -> None:
    spec = parse_spec(SPEC)
    INTERRUPT.add("resnet")
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, tmp_path, jobs=1, progress=False)
    ids = [r.run_id for r in spec.runs]
    # runs before the interrupted one finished and are already in results.csv
    assert [c[0] for c in CALLS] == ids[:5]
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ids[:4]

    CALLS.clear()
    result = run_study(spec, tmp_path, jobs=1, progress=False)
    assert result.skipped == ids[:4] and result.ran == ids[4:]
    assert CALLS[0] == (ids[4], True)  # the interrupted run resumes from its checkpoint
    assert all(resume is False for _, resume in CALLS[1:])
    _check_rows(result.rows)
    assert result.fit.reconstructed.n == 8 and result.complete

    CALLS.clear()
    again = run_study(spec, tmp_path, jobs=1, progress=False)
    assert CALLS == [] and again.ran == [] and again.rows == result.rows


def test_sequential_runs_show_the_trainer_bar_only_with_progress(
    fake_trainer: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = parse_spec(SPEC)
    run_study(spec, tmp_path / "bars", jobs=1, progress=True)
    run_study(spec, tmp_path / "quiet", jobs=1, progress=False)
    for name, shown in (("bars", True), ("quiet", False)):
        for run in spec.runs:
            log = json.loads((tmp_path / name / "runs" / run.run_id / "calls.json").read_text())
            assert log["progress"] is shown, (name, run.run_id)
    assert "8/8 runs" in capsys.readouterr().err  # the overall bar, drawn only with progress


def test_spec_settings_reach_the_trainer(fake_trainer: None, tmp_path: Path) -> None:
    text = (
        "runs:\n  - {family: dense, dataset: digits, latent: 3, epochs: 2, seed: 7, "
        "batch_size: 16, lr: 0.01, hyper: {hidden_sizes: [8]}}"
    )
    (run,) = parse_spec(text).runs
    config = run.train_config(tmp_path / "x", device="cpu")
    expected = TrainConfig(
        family="dense", dataset="digits", epochs=2, latent=3, seed=7, out=str(tmp_path / "x"),
        loss="bernoulli", batch_size=16, lr=0.01, device="cpu", hyper={"hidden_sizes": [8]},
    )  # fmt: skip
    assert dataclasses.asdict(config) == dataclasses.asdict(expected)
    # settings the spec leaves out are the trainer's defaults
    (short,) = parse_spec("runs: [{family: dense, dataset: digits, latent: 3, epochs: 2}]").runs
    config = short.train_config(tmp_path / "y")
    out = str(tmp_path / "y")
    plain = TrainConfig(family="dense", dataset="digits", epochs=2, latent=3, out=out)
    assert dataclasses.asdict(config) == {**dataclasses.asdict(plain), "loss": "bernoulli"}


def test_dask_threads_cluster_gathers_the_same_rows(fake_trainer: None, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    # processes=False: the workers are threads of this process and see the stand-in trainer
    result = run_study(
        parse_spec(SPEC), tmp_path, executor="dask", jobs=2, dask_processes=False, progress=False
    )
    assert result.failed == {} and len(CALLS) == 8
    _check_rows(result.rows)
    assert (tmp_path / "figure.png").is_file()


def test_run_study_rejects_bad_executor_settings(tmp_path: Path) -> None:
    spec = parse_spec(SPEC)
    with pytest.raises(InputError, match="--jobs must be a positive integer"):
        run_study(spec, tmp_path, jobs=0)
    with pytest.raises(InputError, match="--threads must be auto or a positive integer, got 1.5"):
        run_study(spec, tmp_path, threads=1.5)
    with pytest.raises(InputError, match="--scheduler is only used with --executor dask"):
        run_study(spec, tmp_path, scheduler="tcp://127.0.0.1:1")


def test_jobs_default_to_one_per_core_and_are_recorded(
    fake_trainer: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --jobs: one job per usable core, cores // jobs threads each, written in fit.json.
    (One core stands in here so the stand-in trainer runs in this process.)"""
    monkeypatch.setattr(executors, "usable_cores", lambda: 1)
    monkeypatch.setattr(study_run, "usable_cores", lambda: 1)
    before = torch.get_num_threads()
    run_study(parse_spec(SPEC), tmp_path / "default", progress=False)
    settings = json.loads((tmp_path / "default" / "fit.json").read_text())["settings"]
    assert (settings["executor"], settings["jobs"], settings["threads"]) == ("local", 1, 1)
    assert settings["threads_asked"] == "auto"
    calls = [json.loads(path.read_text()) for path in tmp_path.glob("default/runs/*/calls.json")]
    # at most cores // jobs threads, and each run's trainer picks by timing
    assert {(call["threads"], call["threads_asked"]) for call in calls} == {(1, "auto")}
    assert torch.get_num_threads() == before  # the caller's setting is given back

    run_study(parse_spec(SPEC), tmp_path / "three", jobs=1, threads=3, progress=False)
    settings = json.loads((tmp_path / "three" / "fit.json").read_text())["settings"]
    assert (settings["jobs"], settings["threads"]) == (1, 3)
    calls = [json.loads(path.read_text()) for path in tmp_path.glob("three/runs/*/calls.json")]
    assert {(call["threads"], call["threads_asked"]) for call in calls} == {(3, None)}


def test_usable_cores_is_what_this_process_may_use() -> None:
    assert executors.usable_cores() == len(os.sched_getaffinity(0))


def test_second_study_on_the_same_folder_is_refused(fake_trainer: None, tmp_path: Path) -> None:
    with RunFolder(tmp_path).lock():  # as another `varloss study` (or train) would hold it
        with pytest.raises(InputError, match="in use by another"):
            run_study(parse_spec(SPEC), tmp_path, jobs=1, progress=False)
    assert CALLS == []  # nothing trained


SITECUSTOMIZE = """
import importlib.util
from varloss.pipelines.study import executors
spec = importlib.util.spec_from_file_location("fake_study_trainer", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
executors.train = module.fake_train
"""


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_worker_processes_gather_the_same_rows(
    executor: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--jobs 2` (spawned processes) and a Dask LocalCluster of 2 worker processes: the
    stand-in trainer reaches the children through a sitecustomize on their PYTHONPATH."""
    if executor == "dask":
        pytest.importorskip("distributed")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(path=__file__))
    # the children import the varloss this process runs (a work tree's, not only the installed)
    source = Path(executors.__file__).parents[3]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(source)]))
    out = tmp_path / "out"
    result = run_study(parse_spec(SPEC), out, executor=executor, jobs=2, progress=True)
    assert result.failed == {} and len(result.ran) == 8
    _check_rows(result.rows)
    # each run trained once, in a process other than this one, with one thread per job
    pids = set()
    for run in parse_spec(SPEC).runs:
        log = json.loads((out / "runs" / run.run_id / "calls.json").read_text())
        assert log["resume"] is False and log["threads"] == max(1, (os.cpu_count() or 1) // 2)
        assert log["progress"] is False  # parallel runs leave the terminal to the overall bar
        pids.add(log["pid"])
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
