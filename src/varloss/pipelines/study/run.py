"""Running a study: spec -> `varloss train` runs -> results.csv, fit.json and the figure.

The study folder OUT holds study.yaml (the spec as run), results.csv (rewritten after every
finished run), fit.json, figure.png/.svg and runs/<run-id>/, one ordinary training run folder
per run. A finished run (it has report.json) is skipped on a re-run and an interrupted one
resumes from its checkpoint, so the same command continues a study where it stopped. OUT is
locked while a study writes it (`varloss.runs.RunFolder.lock`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from varloss._threads import AUTO, parse_threads
from varloss.data import load
from varloss.errors import InputError
from varloss.figures import plot_study
from varloss.pipelines.study.executors import (
    EXECUTORS,
    ExecutorSettings,
    derive_run,
    threads_per_job,
    usable_cores,
)
from varloss.pipelines.study.fit import fit_results
from varloss.pipelines.study.progress import StudyProgress
from varloss.pipelines.study.results import StudyResult, collect_row, write_results
from varloss.pipelines.study.spec import RunSpec, StudySpec, load_spec
from varloss.records import ResultsRow
from varloss.runs import (
    FIGURE_FILE,
    FIT_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    RUNS_DIR,
    SPEC_FILE,
    RunFolder,
)

__all__ = ["run_study"]


def run_study(
    spec: StudySpec | str | Path,
    out: str | Path,
    *,
    executor: str = "local",
    jobs: int | None = None,
    threads: int | str | None = "auto",
    scheduler: str | None = None,
    device: str | None = None,
    progress: bool = True,
    dask_processes: bool = True,
    on_row: Callable[[ResultsRow], None] | None = None,
    command: str | None = None,
    skip_unavailable: bool = False,
) -> StudyResult:
    """Run (or continue) a study into `out` and write results.csv, fit.json and the figure.

    `executor="local"` trains runs one after another in this process (`jobs=1`) or in `jobs`
    processes (default: one per core, `usable_cores()`), each with `threads` torch threads
    (default "auto": each run times one thread against cores // jobs on its first steps and
    keeps the faster; a count fixes them); `"dask"` submits each run as a task to the cluster
    at `scheduler` (`tcp://HOST:PORT`; `out` must then be a path every worker can reach) or to
    a LocalCluster of `jobs` workers. Finished runs are skipped, interrupted ones resumed;
    results.csv is rewritten after every finished run, so stopping at any moment loses at most
    the runs in flight (which resume from their checkpoints next time). The executor, jobs,
    threads and `command` (the CLI passes its command line) are recorded in fit.json's
    settings. With
    `skip_unavailable`, each data set is loaded once up front and the runs whose data set
    cannot be obtained (say CIFAR-10 offline) are left out with the reason instead of failing
    one by one.
    """
    start = time.perf_counter()
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    if executor not in EXECUTORS:
        raise EXECUTORS.unknown(executor)
    if jobs is None:
        jobs = usable_cores()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"--jobs must be a positive integer, got {jobs!r}.")
    threads = parse_threads(threads) or AUTO
    if scheduler is not None and executor != "dask":
        raise InputError("--scheduler is only used with --executor dask.")
    settings = ExecutorSettings(
        jobs, threads, scheduler, device, dask_processes, progress, spec.plugins
    )
    study = _Study(spec, RunFolder(out), executor, settings, on_row)
    with study.folder.lock(), _sigterm_as_interrupt():
        study.folder.file(RUNS_DIR).mkdir(exist_ok=True)
        study.plan(skip_unavailable)
        study.run_pending()
        return study.finish(command, start)


@dataclass
class _Study:
    """The state of one study call while it holds the folder's lock."""

    spec: StudySpec
    folder: RunFolder
    executor: str
    settings: ExecutorSettings
    on_row: Callable[[ResultsRow], None] | None
    rows: dict[str, ResultsRow] = field(default_factory=dict)  # finished runs, by id
    skipped: list[str] = field(default_factory=list)
    pending: list[RunSpec] = field(default_factory=list)
    # runs that differ from an earlier run only in their reconstruction protocol, each with that
    # run: its model is trained once, then measured again with the twin's protocol
    twins: list[tuple[RunSpec, RunSpec]] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def run_folder(self, run: RunSpec) -> Path:
        # absolute: workers (other processes, other machines) have their own cwd
        return (self.folder.path / RUNS_DIR / run.run_id).resolve()

    def in_spec_order(self, run_ids: Iterable[str]) -> list[str]:
        order = {run.run_id: i for i, run in enumerate(self.spec.runs)}
        return sorted(run_ids, key=order.__getitem__)

    def ordered_rows(self) -> list[ResultsRow]:
        return [self.rows[run_id] for run_id in self.in_spec_order(self.rows)]

    def write_results(self) -> Path:
        return write_results(self.ordered_rows(), self.folder.file(RESULTS_FILE))

    def plan(self, skip_unavailable: bool) -> None:
        """Write the spec, gather finished runs, leave out those without data (if asked)."""
        self.folder.write_text(SPEC_FILE, yaml.safe_dump(self.spec.to_dict(), sort_keys=False))
        for run in self.spec.runs:
            if (self.run_folder(run) / REPORT_FILE).is_file():
                self.rows[run.run_id] = collect_row(run, self.run_folder(run))
                self.skipped.append(run.run_id)
            else:
                self.pending.append(run)
        if skip_unavailable and self.pending:
            reasons = _unavailable_data({(run.dataset, run.data_path) for run in self.pending})
            self.unavailable = {
                run.run_id: reasons[(run.dataset, run.data_path)]
                for run in self.pending
                if (run.dataset, run.data_path) in reasons
            }
            self.pending = [run for run in self.pending if run.run_id not in self.unavailable]
        trained_by: dict[str, RunSpec] = {}
        for run in self.spec.runs:
            trained_by.setdefault(run.training_key, run)
        self.twins = [
            (run, trained_by[run.training_key])
            for run in self.pending
            if trained_by[run.training_key] is not run
        ]
        twin_ids = {run.run_id for run, _ in self.twins}
        self.pending = [run for run in self.pending if run.run_id not in twin_ids]
        self.write_results()

    def run_pending(self) -> None:
        """Train the pending runs with the executor; results.csv after each finished one."""
        twin_ids = {run.run_id for run, _ in self.twins}
        bar = StudyProgress(
            {  # a twin trains nothing: measured, it counts as a run, not as epochs
                run.run_id: 0 if run.run_id in twin_ids else run.epochs
                for run in self.spec.runs
                if run.run_id not in self.unavailable
            },
            {
                run.run_id: self.run_folder(run)
                for run in [*self.pending, *(twin for twin, _ in self.twins)]
            },
            enabled=self.settings.progress,
            desc=self.spec.name,
        )
        tasks = [(run, str(self.run_folder(run))) for run in self.pending]
        executor = EXECUTORS[self.executor]
        outcomes = bar.ticking(executor(tasks, self.settings) if tasks else iter(()))
        try:
            for run, outcome in outcomes:
                self._finished(run, outcome, bar)
            for run, trained in self.twins:  # after every training run: measure the twins
                self._finished(run, self._derive(run, trained), bar)
        finally:
            outcomes.close()  # stops the ticking thread and the runs in flight
            bar.close()

    def _derive(self, run: RunSpec, trained: RunSpec) -> ResultsRow | BaseException:
        """The twin `run` measured from `trained`'s model, in this process (nothing is trained;
        every core is free by then), or why it cannot be."""
        trained_folder = self.run_folder(trained)
        if not (trained_folder / REPORT_FILE).is_file():
            return RuntimeError(
                f"it is measured from the model of run {trained.run_id}, which did not finish"
            )
        try:
            return derive_run(
                run.to_dict(), str(self.run_folder(run)), str(trained_folder), self.settings.device
            )
        except Exception as error:  # noqa: BLE001 - reported like a failed run
            return error

    def _finished(self, run: RunSpec, outcome: Any, bar: StudyProgress) -> None:
        """Record a run's row (results.csv rewritten) or its failure, and move the bar on."""
        if isinstance(outcome, BaseException):
            self.failed[run.run_id] = f"{type(outcome).__name__}: {outcome}"
            bar.write(f"run {run.run_id} failed: {self.failed[run.run_id]}")
        else:
            self.rows[run.run_id] = outcome
            self.ran.append(run.run_id)
            self.write_results()
            if self.on_row is not None:
                self.on_row(outcome)
        bar.finished(run.run_id, last=f"{run.family}/{run.dataset}")

    def finish(self, command: str | None, start: float) -> StudyResult:
        """fit.json and the figure from every finished run (`start`: when the call began)."""
        rows = self.ordered_rows()
        recorded: dict[str, Any] = {"command": command} if command else {}
        recorded["executor"] = self.executor
        recorded["jobs"] = self.settings.jobs
        # the threads of each job (with auto: the most, each run's report says what it used)
        recorded["threads"] = (
            threads_per_job(self.settings) if self.executor == "local" else self.settings.threads
        )
        recorded["threads_asked"] = self.settings.threads
        fit = fit_results(rows, self.spec, recorded)
        fit_path = self.folder.write_json(FIT_FILE, fit.to_json())
        figure_path = None
        if rows:
            title = f"Study {self.spec.name}"
            figure_path = plot_study(
                rows, fit, self.folder.file(FIGURE_FILE), title=title, quick=self.spec.quick
            )
            self.folder.record(FIGURE_FILE, figure_path.with_suffix(".svg").name)
        return StudyResult(
            out=self.folder.path,
            rows=rows,
            fit=fit,
            results_path=self.folder.file(RESULTS_FILE),
            fit_path=fit_path,
            figure_path=figure_path,
            ran=self.in_spec_order(self.ran),  # runs in parallel finish in any order
            skipped=self.skipped,
            failed=self.failed,
            seconds=time.perf_counter() - start,
            spec=self.spec,
            unavailable=self.unavailable,
        )


def _unavailable_data(
    datasets: Iterable[tuple[str, str | None]],
) -> dict[tuple[str, str | None], str]:
    """Load each (data set, data_path) once, both splits; map those that fail to the reason."""
    reasons: dict[tuple[str, str | None], str] = {}
    for dataset, data_path in sorted(datasets, key=lambda key: (key[0], key[1] or "")):
        try:
            for split in ("train", "test"):
                load(dataset, split, data_path=data_path, limit=2)
        except (InputError, OSError) as error:
            reasons[(dataset, data_path)] = str(error)
    return reasons


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Make `kill` stop the study like Ctrl-C (worker processes ended, lock released).

    Handlers can only be set in the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
