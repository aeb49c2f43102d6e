"""Progress bars redraw at most every 30 s when stderr is a log, normally on a terminal."""

from __future__ import annotations

import io

import pytest

from varloss import _progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_in_logs_redraw_rarely(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    assert not _progress.interactive()
    bar = _progress.progress_bar(range(1000), desc="work", file=log)
    assert bar.mininterval == 30.0  # the documented log cadence, not the constant restated
    assert sum(1 for _ in bar) == 1000
    # Start and end only: a 1000-step loop adds no redraw lines within 30 s.
    assert log.getvalue().count("work") <= 2


def test_bars_on_terminals_keep_tqdm_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", _Terminal())
    assert _progress.interactive()
    bar = _progress.progress_bar(total=3, file=io.StringIO())
    assert bar.mininterval == 0.1
    # An explicit setting wins in logs too.
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert _progress.progress_bar(total=3, mininterval=2.0, file=io.StringIO()).mininterval == 2.0
