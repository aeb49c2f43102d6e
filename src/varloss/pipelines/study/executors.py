"""How the study's runs execute: the task (`execute_run`) and the executors that run it.

An executor takes the runs still to do, as (RunSpec, absolute run folder) pairs, and yields
(run, results row or the exception it raised) as runs finish, in any order. `EXECUTORS` maps a
name (`varloss study --executor NAME`) to one; `register_executor` adds another (say, a batch
queue). Built in:

- `local`: one run after another in this process (`jobs=1`, the trainer's bar shown), or
  `jobs` spawned worker processes (by default as many as there are cores, each with
  cores // jobs torch threads: on a CPU, single-threaded jobs side by side beat one job using
  every core);

With `threads="auto"` (the default) each job may use up to cores // jobs threads and its run
times one thread against that many on its first training steps (`varloss._threads`), keeping
the faster; with one job per core that is one thread, untimed. A count fixes the threads.
- `dask`: one task per run on a Dask cluster (`scheduler`) or a LocalCluster of `jobs` workers.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from varloss._registry import Registry
from varloss.errors import InputError
from varloss.models import load_plugins
from varloss.pipelines.study.results import collect_row
from varloss.pipelines.study.spec import RunSpec
from varloss.pipelines.train import train
from varloss.records import ResultsRow
from varloss.run_removal import remove_train_run
from varloss.runs import (
    CHECKPOINT_FILE,
    HISTORY_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    REPORT_FILE,
    RUN_TIMING_FILE,
    RunFolder,
)

__all__ = [
    "EXECUTORS",
    "ExecutorSettings",
    "Outcome",
    "derive_run",
    "execute_run",
    "register_executor",
    "threads_per_job",
    "usable_cores",
]

Task = tuple[RunSpec, str]  # a run and its folder (absolute: workers have their own cwd)
Outcome = tuple[RunSpec, "ResultsRow | BaseException"]


@dataclass
class ExecutorSettings:
    """What `varloss study` passes to every executor (each uses what applies to it)."""

    jobs: int = 1
    # torch threads per job: "auto" (or None): each run picks 1 or cores // jobs by timing; a count
    threads: int | str | None = "auto"
    scheduler: str | None = None  # dask: tcp://HOST:PORT of a running cluster
    device: str | None = None
    dask_processes: bool = True  # dask LocalCluster: worker processes (False: threads)
    progress: bool = False  # the trainer's per-batch bar (sequential runs only)
    plugins: list[str] = field(default_factory=list)


Executor = Callable[[list[Task], ExecutorSettings], Iterator[Outcome]]
EXECUTORS: Registry[Executor] = Registry("study executor")


def register_executor(name: str, executor: Executor, *, replace: bool = False) -> Executor:
    """Make `executor` available as `varloss study --executor NAME`; returns it. A name another
    executor holds is refused unless `replace` (the registries' one duplicate policy)."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"executor name must be lower-case letters, digits, - or _: {name!r}")
    if not callable(executor):
        raise TypeError(f"executor {name!r} must be callable, got {executor!r}")
    return EXECUTORS.register(name, executor, replace=replace)


# ---------------------------------------------------------------------------------------------
# the task


def execute_run(
    run: Mapping[str, Any],
    run_dir: str,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = False,
    plugins: Sequence[str] = (),
    auto_threads: bool = False,
) -> ResultsRow:
    """Train one run into `run_dir` (resuming a partial one) and return its results row.

    Module-level and given plain data so that a process pool or a Dask worker can run it. A run
    whose `report.json` exists is not trained again. `progress` shows the trainer's per-batch
    bar (only where it has a terminal to itself: sequential runs in this process). `plugins`
    are imported first (modules registering the run's family; they must be importable where
    the run executes). `threads` is set first; with `auto_threads` the trainer then keeps one
    thread instead where that ran its first steps faster (`varloss._threads`).
    """
    load_plugins(plugins)
    spec = RunSpec(**run)
    folder = RunFolder(run_dir)
    if not folder.exists(REPORT_FILE):
        if threads:
            torch.set_num_threads(threads)
        resume = folder.exists(CHECKPOINT_FILE)
        config = spec.train_config(folder.path, device)
        start = time.perf_counter()
        train(
            config,
            resume=resume,
            force=not resume and folder.path.exists(),
            progress=progress,
            threads="auto" if auto_threads else None,
        )
        previous = (
            folder.read_json(RUN_TIMING_FILE).get("study_seconds", 0.0)
            if folder.exists(RUN_TIMING_FILE)
            else 0.0
        )
        seconds = float(previous) + time.perf_counter() - start
        _write_timing(folder, spec, seconds, resumed=resume)
    return collect_row(spec, folder.path)


def _write_timing(folder: RunFolder, spec: RunSpec, seconds: float, **facts: Any) -> None:
    """study_run.json: the run's id and settings, the seconds the study spent on it, `facts`."""
    timing = {"run_id": spec.run_id, "settings": spec.settings(), "study_seconds": seconds}
    folder.write_json(RUN_TIMING_FILE, {**timing, **facts})


def derive_run(
    run: Mapping[str, Any],
    run_dir: str,
    trained_dir: str,
    device: str | None = None,
) -> ResultsRow:
    """A run that differs from the finished run in `trained_dir` only in its reconstruction
    protocol: its checkpoint and history are copied and the trainer, resuming, finds nothing to
    train and measures the model with this run's protocol. Returns the results row.

    Its report is that of the same trained model (same weights, history and training time);
    `study_run.json` records `derived_from`. A folder left half-made is made again: what
    varloss wrote in it is deleted first (`remove_train_run`), a file of the user's stays, and
    a folder holding files varloss did not write is refused in one sentence.
    """
    spec = RunSpec(**run)
    folder = RunFolder(run_dir)
    if not folder.exists(REPORT_FILE):
        trained = RunFolder(trained_dir)
        trained.verify(CHECKPOINT_FILE, required=True)
        with folder.lock():  # its lock file marks the folder as varloss's before anything lands
            _clear_half_made(folder)
            folder.file(CHECKPOINT_FILE).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(trained.file(CHECKPOINT_FILE), folder.file(CHECKPOINT_FILE))
            shutil.copy2(trained.file(HISTORY_FILE), folder.file(HISTORY_FILE))
            folder.record(CHECKPOINT_FILE, HISTORY_FILE)
        start = time.perf_counter()
        train(spec.train_config(folder.path, device), resume=True, progress=False)
        seconds = time.perf_counter() - start
        _write_timing(folder, spec, seconds, resumed=False, derived_from=Path(trained_dir).name)
    return collect_row(spec, folder.path)


def _clear_half_made(folder: RunFolder) -> None:
    """Delete what varloss wrote in a twin's folder left half-made (the trained run's copied
    checkpoint, a page, a report being written); refuse, deleting nothing, where the folder
    holds files varloss did not write (no manifest, no lock file of an earlier attempt)."""
    if not any(path.name != LOCK_FILE for path in folder.path.iterdir()):
        return  # new, or empty: nothing to delete
    if not folder.written_by_varloss():
        raise InputError(
            f"study run folder {folder.path} holds files varloss did not write (it has no "
            f"{MANIFEST_FILE} and no {LOCK_FILE}), so the study deletes nothing in it; move "
            "them elsewhere and run the study again."
        )
    remove_train_run(folder, what="study run folder")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_job(settings: ExecutorSettings) -> int:
    """A `--threads` count, else the cores shared out between the jobs (at least one each): what
    each job uses, or with auto the most it may use."""
    if isinstance(settings.threads, int):
        return settings.threads
    return max(1, usable_cores() // settings.jobs)


def auto_threads(settings: ExecutorSettings) -> bool:
    """Whether each run picks its threads by timing (`--threads auto`, the default)."""
    return not isinstance(settings.threads, int)


# ---------------------------------------------------------------------------------------------
# local: in this process, or in worker processes


def run_locally(tasks: list[Task], settings: ExecutorSettings) -> Iterator[Outcome]:
    """`jobs=1`: one run after another here; more: that many spawned worker processes."""
    if settings.jobs == 1:
        return _run_sequentially(tasks, settings)
    return _run_in_processes(tasks, settings)


def _run_sequentially(tasks: Iterable[Task], settings: ExecutorSettings) -> Iterator[Outcome]:
    previous_threads = torch.get_num_threads()  # this process's setting, given back at the end
    try:
        for run, directory in tasks:
            try:
                row = execute_run(
                    run.to_dict(),
                    directory,
                    settings.device,
                    threads_per_job(settings),
                    progress=settings.progress,
                    plugins=settings.plugins,
                    auto_threads=auto_threads(settings),
                )
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as error:  # one broken run must not sink the others
                yield run, error
            else:
                yield run, row
    finally:
        torch.set_num_threads(previous_threads)


def _run_in_processes(tasks: list[Task], settings: ExecutorSettings) -> Iterator[Outcome]:
    # spawn, not fork: a forked child of a process that already ran torch can deadlock.
    pool = ProcessPoolExecutor(
        max_workers=min(settings.jobs, len(tasks)),
        mp_context=multiprocessing.get_context("spawn"),
    )
    threads = threads_per_job(settings)
    try:
        futures = {
            pool.submit(
                execute_run,
                run.to_dict(),
                directory,
                settings.device,
                threads,
                plugins=settings.plugins,
                auto_threads=auto_threads(settings),
            ): run
            for run, directory in tasks
        }
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], error if error is not None else future.result()
    except BaseException:
        # stopped (Ctrl-C, kill): stop the runs in flight too; they resume from checkpoints
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------
# dask


def run_on_dask(tasks: list[Task], settings: ExecutorSettings) -> Iterator[Outcome]:
    """One task per run on the cluster at `scheduler`, or on a LocalCluster of `jobs` workers."""
    try:
        # optional dependency (varloss[dask]): imported only when this executor is chosen
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
    except ImportError:
        raise InputError(
            "--executor dask needs Dask distributed; install it with `pip install varloss[dask]`."
        ) from None
    cluster = None
    if settings.scheduler is None:
        processes = settings.dask_processes
        cluster = LocalCluster(
            n_workers=settings.jobs,
            threads_per_worker=1,
            processes=processes,
            # loopback only; an in-process (threads) cluster talks inproc:// and takes no host
            **({"host": "127.0.0.1"} if processes else {}),
            dashboard_address=":0",  # a free port: 8787 may be taken
        )
        client = Client(cluster)
        threads = threads_per_job(settings) if processes else None
    else:
        if not re.match(r"^[a-z]+://", settings.scheduler):
            raise InputError(
                f"--scheduler must look like tcp://HOST:PORT, got {settings.scheduler!r}."
            )
        client = Client(settings.scheduler, timeout="30s")
        # a remote worker knows its own machine: its torch default, or the count given
        threads = settings.threads if isinstance(settings.threads, int) else None
    try:
        futures = {
            client.submit(
                execute_run,
                run.to_dict(),
                directory,
                settings.device,
                threads,
                plugins=settings.plugins,
                auto_threads=auto_threads(settings),
                key=f"varloss-study-{run.run_id}",
                pure=False,
            ): run
            for run, directory in tasks
        }
        for future in dask_completed(futures):
            run = futures[future]
            yield run, future.result() if future.status == "finished" else future.exception()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


register_executor("local", run_locally)
register_executor("dask", run_on_dask)
