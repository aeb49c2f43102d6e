"""`--threads auto`: the faster of one thread and N picked from timings (injected here, so the
tests are deterministic), the choice recorded, results equal to the chosen explicit count, and
bad values refused in one sentence. No timed assertion anywhere."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from varloss import _threads
from varloss._threads import (
    ThreadChoice,
    choose_threads,
    parse_threads,
    threads_kept,
    time_threads,
)
from varloss.cli import app
from varloss.errors import InputError
from varloss.pipelines.train import train
from varloss.runs import MODEL_FILE, REPORT_FILE, RunFolder
from varloss.train_config import TrainConfig


@pytest.fixture()
def two_threads() -> Iterator[None]:
    """Torch at two threads (N = 2 for auto), the caller's setting given back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _timings(one: float, two: float):
    """A timing function that returns fixed seconds per step (and records what it was asked)."""
    asked: list[tuple[int, ...]] = []

    def timing(probe, candidates):
        asked.append(candidates)
        return dict(zip(candidates, (one, two), strict=True))

    timing.asked = asked
    return timing


@pytest.mark.parametrize(("one", "two", "used"), [(0.01, 0.3, 1), (0.3, 0.01, 2), (0.2, 0.2, 1)])
def test_auto_keeps_the_faster_count(two_threads: None, one: float, two: float, used: int) -> None:
    timing = _timings(one, two)
    choice = choose_threads("auto", lambda: None, timing=timing)
    assert timing.asked == [(1, 2)]  # one thread against torch's setting
    assert (choice.used, torch.get_num_threads()) == (used, used)  # set, a tie goes to one
    assert choice.to_dict() == {
        "asked": "auto",
        "used": used,
        "rule": f"timed: {'one thread' if used == 1 else '2 threads'} ran the first steps faster",
        "timings": {"1": one, "2": two},
    }


def test_counts_none_and_untimed_cases(two_threads: None) -> None:
    never = _timings(0.0, 0.0)
    assert choose_threads(None, lambda: None, timing=never) == ThreadChoice(
        None, 2, "torch's setting, unchanged"
    )
    assert choose_threads("3", lambda: None, timing=never).used == torch.get_num_threads() == 3
    torch.set_num_threads(2)
    assert choose_threads("auto", None, timing=never).used == 2  # on an accelerator: untimed
    torch.set_num_threads(1)
    assert choose_threads("auto", lambda: None, timing=never).rule.startswith("not timed")
    assert never.asked == []


def test_time_threads_takes_medians_and_leaves_no_trace(two_threads: None) -> None:
    """Each candidate: a warm-up call, then a timed one, alternating; medians of the rounds; the
    thread count and torch's random state are as before (the probe draws from it)."""
    ticks = itertools.count()
    durations = iter([5.0, 1.0, 2.0, 1.0, 3.0, 9.0])  # round by round: (1 thread, 2 threads)
    clock = {"now": 0.0}

    def timer() -> float:  # start and stop of each timed call: stop adds the scripted duration
        if next(ticks) % 2:
            clock["now"] += next(durations)
        return clock["now"]

    calls: list[int] = []

    def probe() -> None:
        calls.append(torch.get_num_threads())
        torch.rand(3)

    torch.manual_seed(7)
    expected_next = torch.rand(2)
    torch.manual_seed(7)
    timings = time_threads(probe, (1, 2), rounds=3, timer=timer, decisive=None)
    assert timings == {1: 3.0, 2: 1.0}  # medians of (5, 2, 3) and (1, 1, 9)
    assert calls == [1, 1, 2, 2] * 3
    assert torch.get_num_threads() == 2
    assert torch.equal(torch.rand(2), expected_next)


def test_time_threads_stops_once_one_count_is_decisively_slower(two_threads: None) -> None:
    """First round 1 s against 1.5 s: not decisive (< 2x), a second round; medians 1 and 3.25
    after it: decisive, no third round."""
    durations = iter([1.0, 1.5, 1.0, 5.0, 1.0, 1.0])
    ticks = itertools.count()
    clock = {"now": 0.0}

    def timer() -> float:
        if next(ticks) % 2:
            clock["now"] += next(durations)
        return clock["now"]

    calls: list[int] = []
    timings = time_threads(lambda: calls.append(1), (1, 2), rounds=3, timer=timer, decisive=2.0)
    assert timings == {1: 1.0, 2: 3.25}
    assert len(calls) == 8  # two rounds of (warm-up + timed) x 2 counts


@pytest.mark.parametrize("bad", [0, -1, "0", "x", "1.5", 1.5, True, ""])
def test_bad_values_are_one_sentence(bad) -> None:
    with pytest.raises(InputError) as error:
        parse_threads(bad)
    message = str(error.value)
    assert message == f"--threads must be auto or a positive integer, got {bad!r}." or (
        message == f"--threads must be auto or a positive integer, got {int(bad)!r}."
    )
    assert message.count(".") <= 2  # one sentence


@pytest.mark.parametrize("bad", ["0", "x"])
def test_cli_refuses_bad_threads_before_writing(tmp_path: Path, bad: str) -> None:
    out = tmp_path / "run"
    for command in (
        ["train", "--dataset", "digits", "--out", str(out)],
        ["measure", "--real", "digits:test", "--model", str(out)],
        ["correct", str(out)],
    ):
        result = CliRunner().invoke(app, [*command, "--threads", bad])
        assert result.exit_code != 0
        assert "--threads must be auto or a positive integer" in str(result.exception)
    assert not out.exists()


def _tiny(out: Path) -> TrainConfig:
    return TrainConfig(
        family="dense", dataset="digits", epochs=2, latent=2, seed=5, out=str(out), limit=120,
        eval_limit=60, batch_size=30, hyper={"hidden_sizes": [32]}, fid="off",
    )  # fmt: skip


@pytest.mark.parametrize("faster", [1, 2])
def test_auto_trains_exactly_like_the_count_it_chose(
    two_threads: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faster: int
) -> None:
    """The probe really runs (one round) on copies, then the run equals one with --threads
    USED bit for bit: weights and report; the choice is in report.json's settings."""

    def timing(probe, candidates):
        real = time_threads(probe, candidates, rounds=1)
        assert set(real) == {1, 2} and all(seconds > 0 for seconds in real.values())
        return {count: (0.1 if count == faster else 0.2) for count in candidates}

    monkeypatch.setattr(_threads, "time_threads", timing)
    auto = train(_tiny(tmp_path / "auto"), progress=False, threads="auto")
    torch.set_num_threads(2)
    explicit = train(_tiny(tmp_path / "explicit"), progress=False, threads=faster)
    assert torch.get_num_threads() == 2  # the caller's setting is given back
    recorded = RunFolder(tmp_path / "auto").read_json(REPORT_FILE)["settings"]["threads"]
    assert (recorded["asked"], recorded["used"], recorded["timings"]) == (
        "auto", faster, {"1": 0.1 if faster == 1 else 0.2, "2": 0.1 if faster == 2 else 0.2}
    )  # fmt: skip
    assert RunFolder(tmp_path / "explicit").read_json(REPORT_FILE)["settings"]["threads"] == {
        "asked": faster, "used": faster, "rule": "as asked", "timings": {}
    }  # fmt: skip
    for key in ("var_reconstructed", "var_generated", "mse", "bias2", "cov_term", "final_loss"):
        assert auto[key] == explicit[key], key
    weights = [load_file(tmp_path / name / MODEL_FILE) for name in ("auto", "explicit")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_count_limits_numpy_s_blas_too_and_the_caller_gets_it_back():
    import numpy as np  # noqa: F401  (loads numpy's BLAS, so threadpoolctl can see it)
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> set[int]:
        return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine
        assert blas_threads() == {2}
        with threads_kept():
            choose_threads(1, probe=None)
            assert blas_threads() == {1} and torch.get_num_threads() == 1
        assert blas_threads() == {2}
