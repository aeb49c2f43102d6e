"""`--threads auto`: torch's CPU threads chosen by timing the real work, and the record of it.

Why: small networks on a busy machine are many times slower with torch's default threads than
with one (measured on a shared 2-core machine: the README's dense MNIST example ran 1.3-1.6
batches/s with the default and 19-31 with one thread), while on a quiet machine with large
batches several threads win. Neither is right everywhere, so `auto` times both on the work
itself: a caller passes a `probe`, one representative step of its work (a training step on a
copy of the model, a measured batch) that leaves no trace, and `choose_threads` runs it with
one thread and with N (torch's setting when called: its default of one per core, or what a
study gave each job), then keeps the faster. Each candidate gets a warm-up call (a new thread
count starts a new thread pool) then one timed call, alternating, up to `ROUNDS` times (fewer
once one count is `DECISIVE` times slower); the median decides (ties go to one thread). The
probe runs under a forked torch random state, so timing draws nothing from the run's streams.

The chosen count is recorded (`ThreadChoice.to_dict()`: asked, used, rule, timings). Results
with `auto` equal results with `--threads USED` bit for bit; for some models (convolutions)
the thread count changes float32 rounding, so two `auto` runs on machines (or moments) that
chose differently can differ in the last bits: give the recorded count to reproduce exactly.
A count (asked or chosen) also limits the BLAS libraries numpy and scipy load (`set_threads`,
through threadpoolctl): left alone they take one thread per core, so a command's numpy work
would spread onto a core given to something else (`varloss correct`'s worker process).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from varloss.errors import InputError

AUTO = "auto"
ROUNDS = 3  # timed calls per candidate (each after its own warm-up call)
DECISIVE = 2.0  # a candidate this many times slower after a round is not timed again

Probe = Callable[[], Any]


def parse_threads(value: Any, name: str = "--threads") -> int | str | None:
    """`auto`, a positive integer (also as text), or None (leave torch's setting as it is)."""
    if value is None or value == AUTO:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise InputError(f"{name} must be auto or a positive integer, got {value!r}.")


@dataclass(frozen=True)
class ThreadChoice:
    """How many torch threads a piece of work used, and why."""

    asked: int | str | None  # what the user or caller gave: auto, a count, None
    used: int
    rule: str  # how `used` was reached, in words
    timings: dict[int, float] = field(default_factory=dict)  # median seconds per probe step

    def to_dict(self) -> dict[str, Any]:
        """The record saved in reports: {"asked", "used", "rule", "timings": {"1": s, ...}}."""
        timings = {str(count): seconds for count, seconds in self.timings.items()}
        return {"asked": self.asked, "used": self.used, "rule": self.rule, "timings": timings}


def time_threads(
    probe: Probe,
    candidates: tuple[int, ...],
    *,
    rounds: int = ROUNDS,
    timer: Callable[[], float] = time.perf_counter,
    decisive: float | None = DECISIVE,
) -> dict[int, float]:
    """The median seconds of one `probe()` call with each thread count of `candidates`.

    Candidates alternate within each round (a machine whose load changes meanwhile weighs on
    all of them alike); each timed call follows an untimed one with the same count. Rounds stop
    early once the slowest median is `decisive` times the fastest (None: all rounds): a count
    that runs the steps many times slower is not worth timing again. The caller's thread count
    and torch's random state are given back."""
    samples: dict[int, list[float]] = {count: [] for count in candidates}
    previous = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]):
            for _ in range(rounds):
                for count in candidates:
                    torch.set_num_threads(count)
                    probe()  # warm-up: the thread pool of this count, caches
                    started = timer()
                    probe()
                    samples[count].append(timer() - started)
                medians = [statistics.median(values) for values in samples.values()]
                if decisive is not None and max(medians) >= decisive * min(medians):
                    break
    finally:
        torch.set_num_threads(previous)
    return {count: statistics.median(values) for count, values in samples.items()}


def choose_threads(
    asked: Any,
    probe: Probe | None,
    *,
    timing: Callable[[Probe, tuple[int, ...]], dict[int, float]] | None = None,
) -> ThreadChoice:
    """Set torch's CPU threads as `asked` says and return the choice (see the module's notes).

    `asked`: None keeps torch's setting; a count sets it; `auto` times `probe` with one thread
    and with torch's current setting N and keeps the faster. Without a probe (the work runs on
    an accelerator) or with N = 1, `auto` keeps N untimed. `timing` defaults to `time_threads`
    (tests pass their own, to be deterministic)."""
    asked = parse_threads(asked)
    most = torch.get_num_threads()
    if asked is None:
        return ThreadChoice(None, most, "torch's setting, unchanged")
    if asked != AUTO:
        set_threads(asked)
        return ThreadChoice(asked, asked, "as asked")
    if probe is None:
        return ThreadChoice(AUTO, most, "not timed: the work runs on an accelerator")
    if most == 1:
        return ThreadChoice(AUTO, 1, "not timed: one thread is all there is")
    timings = (timing or time_threads)(probe, (1, most))
    used = min(timings, key=lambda count: (timings[count], count))  # a tie: one thread
    set_threads(used)
    faster = "one thread" if used == 1 else f"{used} threads"
    return ThreadChoice(AUTO, used, f"timed: {faster} ran the first steps faster", timings)


def set_threads(count: int) -> None:
    """Set torch's CPU threads and the BLAS threads of numpy and scipy (OpenBLAS, MKL: through
    threadpoolctl) to `count`: the work of a command stays on the cores it chose, e.g. beside
    `correct`'s worker process (a BLAS left at one thread per core would share that core)."""
    torch.set_num_threads(count)
    threadpool_limits(limits=count, user_api="blas")


@contextlib.contextmanager
def threads_kept() -> Iterator[None]:
    """Give torch's thread count and the BLAS libraries' back as they were when the block ends
    (a library call that chose its own leaves the caller's setting alone)."""
    previous = torch.get_num_threads()
    try:
        with threadpool_limits(limits=None, user_api="blas"):  # restores them on leaving
            yield
    finally:
        torch.set_num_threads(previous)
