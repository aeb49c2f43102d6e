"""The study's progress bar, counted in epochs so that it moves while runs train.

A bar in runs sat at 0/28 for the minutes the first runs took. This one counts epochs: a
finished run (or a failed one, or a twin that is only measured) adds all its epochs, and a
running run the rows of its `history.csv`, which the trainer rewrites after every epoch. The
folders are read when the bar redraws (every second on a terminal, every 30 s in a log), so
the count is the same whatever the executor: worker processes and Dask workers write into the
study folder this process reads. The runs finished are shown beside it ("3/28 runs").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from varloss._progress import LOG_INTERVAL_SECONDS, interactive, progress_bar
from varloss.runs import HISTORY_FILE

__all__ = ["StudyProgress", "epochs_in"]


def epochs_in(folder: Path) -> int:
    """The epochs a run folder's history.csv records (0 before its first epoch ends)."""
    try:
        text = (folder / HISTORY_FILE).read_text()
    except OSError:  # not written yet (or being replaced on a system without atomic rename)
        return 0
    return max(0, len(text.splitlines()) - 1)  # the header is not an epoch


class StudyProgress:
    """The bar of one study call: `epochs` maps every run counted to its epoch cap, `folders`
    the runs still to do to their folders; `runs_done` of them are done already.

    `finished(run_id)` when a run ends; `refresh()` (also from `ticking`'s thread) reads the
    running runs' histories and redraws."""

    def __init__(
        self,
        epochs: Mapping[str, int],
        folders: Mapping[str, Path],
        *,
        enabled: bool,
        desc: str,
        bar: Any = None,
    ) -> None:
        self.epochs = dict(epochs)
        self.running = dict(folders)  # not finished yet
        self.done_epochs = sum(n for run_id, n in self.epochs.items() if run_id not in folders)
        self.runs_done = len(self.epochs) - len(self.running)
        self.last = ""
        self._lock = threading.Lock()
        self.bar = bar if bar is not None else _bar(sum(self.epochs.values()), desc, enabled)
        self.refresh()

    def refresh(self) -> None:
        """Finished runs' epochs plus the epochs in the running runs' histories, redrawn."""
        with self._lock:
            running = sum(
                min(epochs_in(folder), self.epochs[run_id])
                for run_id, folder in self.running.items()
            )
            self.bar.n = self.done_epochs + running
            self.bar.set_postfix_str(self._postfix(), refresh=False)
            self.bar.refresh()

    def finished(self, run_id: str, last: str = "") -> None:
        """A run ended (trained, measured, or failed): all its epochs count now."""
        with self._lock:
            if self.running.pop(run_id, None) is not None:
                self.done_epochs += self.epochs[run_id]
                self.runs_done += 1
            self.last = last
        self.refresh()

    def write(self, message: str) -> None:
        self.bar.write(message)

    def close(self) -> None:
        self.bar.close()

    def ticking(self, outcomes: Iterator[Any], every: float | None = None) -> Iterator[Any]:
        """Pass `outcomes` through while a thread refreshes the bar every `every` seconds, so
        that the epochs, the elapsed time and the estimate move during runs of minutes. By
        default every second on a terminal, every 30 s when stderr goes to a file or pipe (a log
        gets a line per redraw)."""
        if every is None:
            every = 1.0 if interactive() else LOG_INTERVAL_SECONDS
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(every):
                self.refresh()

        thread = threading.Thread(target=tick, name="study-progress", daemon=True)
        if not getattr(self.bar, "disable", False):
            thread.start()
        try:
            yield from outcomes
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()

    def _postfix(self) -> str:
        runs = f"{self.runs_done}/{len(self.epochs)} runs"
        return f"{runs}, last: {self.last}" if self.last else runs


def _bar(total: int, desc: str, enabled: bool) -> Any:
    return progress_bar(
        total=total,
        desc=f"study {desc}",
        unit="epoch",
        disable=not enabled,
        dynamic_ncols=True,
        bar_format="{desc}: {n_fmt}/{total_fmt} epochs |{bar}| elapsed {elapsed}, "
        "ETA {remaining}{postfix}",
    )
