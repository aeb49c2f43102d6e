"""The study's bar counts epochs: finished runs all theirs, running runs the rows of their
history.csv, so it moves while runs train (no timing: the bar is refreshed by hand here)."""

from __future__ import annotations

from pathlib import Path

import pytest

import varloss.pipelines.study.run as study_run
from varloss.pipelines.study import executors, parse_spec, run_study
from varloss.pipelines.study import progress as study_progress
from varloss.pipelines.study.progress import StudyProgress, epochs_in
from varloss.runs import CHECKPOINT_DIR, CHECKPOINT_FILE, HISTORY_FILE, REPORT_FILE, RunFolder
from varloss.train_config import TrainConfig


class RecordingBar:
    """Stands in for tqdm: keeps every count it was redrawn with, and the postfix."""

    disable = False

    def __init__(self) -> None:
        self.n = 0
        self.shown: list[int] = []
        self.postfix = ""

    def refresh(self) -> None:
        self.shown.append(self.n)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def write(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


def _write_epochs(folder: Path, epochs: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{epoch},0.5\n" for epoch in range(1, epochs + 1))
    (folder / HISTORY_FILE).write_text("epoch,loss\n" + rows)


def test_running_runs_count_the_epochs_in_their_history(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    bar = RecordingBar()
    # run "done" finished before this call (4 epochs), "twin" is only measured (0 epochs)
    progress = StudyProgress(
        {"done": 4, "a": 3, "b": 2, "twin": 0},
        {"a": first, "b": second, "twin": tmp_path / "twin"},
        enabled=True,
        desc="test",
        bar=bar,
    )
    assert (bar.n, bar.postfix) == (4, "1/4 runs")
    assert epochs_in(first) == 0  # no history yet
    for epoch in (1, 2, 3):  # run a trains: one more epoch per history row
        _write_epochs(first, epoch)
        progress.refresh()
        assert bar.n == 4 + epoch
    _write_epochs(second, 1)
    progress.refresh()
    assert bar.n == 4 + 3 + 1
    progress.finished("a", last="dense/digits")
    assert (bar.n, bar.postfix) == (8, "2/4 runs, last: dense/digits")  # a's 3, b's 1 so far
    _write_epochs(second, 5)  # a history longer than the cap (say a resumed, longer run)
    progress.refresh()
    assert bar.n == 9
    progress.finished("b")
    progress.finished("b")  # told twice: counted once
    progress.finished("twin")
    assert (bar.n, bar.postfix) == (9, "4/4 runs")
    assert bar.shown == sorted(bar.shown)  # never backwards


def test_a_study_bar_moves_with_each_epoch_of_a_running_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of 3 epochs, one after the other: the bar, redrawn after each epoch the trainer
    writes, shows 1, 2, 3 epochs during the first run, 4, 5, 6 during the second."""
    bar = RecordingBar()
    monkeypatch.setattr(study_progress, "_bar", lambda total, desc, enabled: bar)
    live: list[StudyProgress] = []
    original_init = StudyProgress.__init__

    def remember(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        live.append(self)

    monkeypatch.setattr(StudyProgress, "__init__", remember)
    seen: list[int] = []

    def fake_train(config: TrainConfig, **options) -> dict:
        folder = RunFolder(config.out)
        folder.file(CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        for epoch in range(1, config.epochs + 1):
            _write_epochs(folder.path, epoch)
            live[0].refresh()  # what the ticking thread does every second
            seen.append(bar.n)
        (folder.file(CHECKPOINT_FILE)).write_bytes(b"state")
        folder.write_json(REPORT_FILE, {})
        return {}

    monkeypatch.setattr(executors, "train", fake_train)
    monkeypatch.setattr(executors, "collect_row", lambda spec, folder: {"run_id": spec.run_id})
    spec = parse_spec(
        "name: bar\ndefaults: {dataset: digits, epochs: 3, limit: 50}\n"
        "grid:\n  family: [dense]\n  latent: [2, 3]\n"
    )
    # the rows, fit and figure are other tests' business: only the bar is looked at here
    monkeypatch.setattr(study_run, "write_results", lambda rows, path: path)
    monkeypatch.setattr(study_run._Study, "finish", lambda self, command, start: None)
    run_study(spec, tmp_path, jobs=1, progress=True)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert bar.n == 6 and bar.postfix.startswith("2/2 runs")
