"""Nothing lost (issue 24): varloss never replaces a page or deletes a file it did not write, and
a kill at any moment leaves a run that `--resume` continues.

Run folders are tiny real training runs (digits, a dense VAE, a few images), built in the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import varloss
from varloss.cli import run
from varloss.errors import InputError
from varloss.report import write_report


def invoke(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `varloss ARGS`, as the installed script runs it."""
    monkeypatch.setattr(sys, "argv", ["varloss", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        run()
    captured = capsys.readouterr()
    code = stop.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


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
