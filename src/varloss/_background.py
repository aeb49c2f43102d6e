"""One function call in a fresh Python process, on one thread, while this process goes on.

Why: `varloss correct` spends about half its time training the second stage of the two-stage
methods, a small MLP that runs fastest on one thread, while the rest of its work (fitting and
measuring the other remedies) would leave a second core idle. A `Worker` is a Python process that
runs one call there; started early, it pays its start (importing torch and what the call needs,
about 3 s) while this process loads data.

A fresh interpreter (`python -m varloss._background`), not `multiprocessing`: forking a process
whose OpenMP threads are running can hang it, and spawning re-imports the caller's `__main__`,
which re-runs a script without an `if __name__ == "__main__"` guard.

The protocol: the worker imports torch and the `preload` modules (those its call will need:
their import then overlaps the caller's work too), then waits for one line on its stdin, which
says that the job is in the file `job.pt` beside the result (`torch.save` of {"target":
"module:function", "kwargs": {...}, "callback": keyword or None}; a file, so that the caller
never waits on a pipe for a worker still importing). It calls the function with torch and the
BLAS libraries on `threads` threads, and `torch.save`s its return value into the file named by
its argument. When the job names a callback keyword, the function gets a callable under it whose
every call prints one line `progress <JSON arguments>` on stdout; `Worker.result(callback)`
replays those calls here. The worker's stderr goes to a file whose last lines a failure quotes.
A worker whose stdin closes without a job (its caller went away) exits, and so does one whose
caller dies while it runs (seen at its next progress call), removing its files.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_PROGRESS = b"progress "
_QUOTED_LINES = 12  # of the worker's stderr, in the error a failed call raises


_WARM: dict[tuple[int, tuple[str, ...]], Worker] = {}  # started by `warm_up`, not yet taken


def warm_up(threads: int = 1, preload: Sequence[str] = ()) -> None:
    """Start a worker now for a later `take_worker` with the same arguments: a command calls it
    before its own imports (torch, a second or two), so that the worker's start overlaps them too.
    A warm worker nobody takes is stopped at exit. Nothing on one core, or if it cannot start."""
    key = (int(threads), tuple(preload))
    if key in _WARM or available_cores() < 2:
        return
    try:
        worker = Worker(threads, preload)
    except OSError:
        return  # `take_worker` will say why, if a worker is wanted after all
    _WARM[key] = worker
    atexit.register(worker.close)


def take_worker(threads: int = 1, preload: Sequence[str] = ()) -> Worker:
    """The worker `warm_up` started with these arguments, if it is still waiting; else a new one."""
    worker = _WARM.pop((int(threads), tuple(preload)), None)
    if worker is not None and not worker.busy and worker._process.poll() is None:
        return worker
    if worker is not None:
        worker.close()
    return Worker(threads, preload)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Worker:
    """A Python process that runs one function call (`submit`, then `result`).

    Starting it starts the interpreter and its imports at once; `close()` (or leaving a `with`
    block) kills a call that is still running and removes the worker's files.
    """

    def __init__(self, threads: int = 1, preload: Sequence[str] = ()) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="varloss-worker-"))
        self._result = self._folder / "result.pt"
        self._job = self._folder / "job.pt"
        self._stderr = open(self._folder / "stderr.txt", "wb")  # noqa: SIM115 (closed in close)
        package_root = str(Path(__file__).resolve().parents[1])  # this varloss, in the worker
        path = os.environ.get("PYTHONPATH")
        env = dict(
            os.environ,
            PYTHONPATH=package_root + (os.pathsep + path if path else ""),
            OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads),
            OPENBLAS_NUM_THREADS=str(threads),
        )
        self.target: str | None = None
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "varloss._background",
                    str(self._result),
                    str(threads),
                    *preload,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
            )
        except BaseException:
            self._stderr.close()
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        # the worker's stdout is read as it comes, so that its progress lines never fill the pipe
        # (and stall it) while this process is busy elsewhere; `result` replays them
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self._process.stdout is not None
        try:
            for line in self._process.stdout:
                self._lines.put(line)
        except (OSError, ValueError):  # closed under it by `close`
            pass
        self._lines.put(None)  # end of output: the worker has exited or closed it

    @property
    def busy(self) -> bool:
        """Whether a call was submitted (a worker runs one)."""
        return self.target is not None

    def submit(self, target: str, callback: str | None = None, **kwargs: Any) -> None:
        """Start `target` ("module:function") with `kwargs` in the worker; with `callback`, the
        function gets under that keyword a callable whose calls `result` replays here."""
        import torch  # torch.save carries tensors (and the rest, pickled) to the worker

        if self.busy:
            raise RuntimeError(f"this worker already runs {self.target}.")
        self.target = target
        partial = self._job.with_suffix(".partial")
        torch.save({"target": target, "kwargs": kwargs, "callback": callback}, partial)
        partial.replace(self._job)
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(b"go\n")
            self._process.stdin.close()
        except BrokenPipeError:  # the worker died before it read its job: `result` says why
            pass

    def result(self, callback: Callable[..., Any] | None = None) -> Any:
        """Wait for the call and return its value, replaying its progress calls on `callback`;
        a call that failed raises RuntimeError quoting the worker's last lines of stderr."""
        import torch

        if not self.busy:
            raise RuntimeError("nothing was submitted to this worker.")
        while (line := self._lines.get()) is not None:
            if line.startswith(_PROGRESS) and callback is not None:
                callback(*json.loads(line[len(_PROGRESS) :]))
        self._lines.put(None)  # a second `result` ends at once too
        code = self._process.wait()
        if code != 0 or not self._result.is_file():
            self._stderr.flush()
            tail = (self._folder / "stderr.txt").read_text(errors="replace").strip()
            quoted = "\n".join(tail.splitlines()[-_QUOTED_LINES:]) or "(no output)"
            raise RuntimeError(
                f"the worker process running {self.target} failed (exit code {code}):\n{quoted}"
            )
        return torch.load(self._result, weights_only=False)  # written by our own worker

    def close(self) -> None:
        """Stop the worker if it still runs and remove its files (again: nothing)."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._reader.join(timeout=5)  # its pipe ends with the worker
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._stderr.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_CALLER = os.getppid()  # in the worker: the process that started it


def _report(*values: Any) -> None:
    """The worker's progress callback; it stops the worker once its caller is gone."""
    try:
        if os.getppid() != _CALLER:
            raise BrokenPipeError
        sys.stdout.buffer.write(_PROGRESS + json.dumps(values).encode() + b"\n")
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the caller died (killed): nobody will read the result
        shutil.rmtree(Path(sys.argv[1]).parent, ignore_errors=True)
        os._exit(1)


def _main(argv: list[str]) -> int:
    """The worker: `python -m varloss._background RESULT THREADS [MODULE ...]` (see the module
    docstring)."""
    import importlib

    import torch  # the slow import, done before the job arrives

    result, threads = Path(argv[1]), int(argv[2])
    for module in argv[3:]:
        importlib.import_module(module)
    torch.set_num_threads(threads)
    if not sys.stdin.buffer.readline():  # the caller went away without a job
        return 0
    job = torch.load(result.with_name("job.pt"), weights_only=False)  # from our own caller
    module, _, name = job["target"].partition(":")
    function = getattr(importlib.import_module(module), name)
    kwargs = dict(job["kwargs"])
    if job["callback"]:
        kwargs[job["callback"]] = _report
    value = function(**kwargs)
    partial = result.with_suffix(".partial")
    torch.save(value, partial)
    partial.replace(result)  # the caller never reads half a file
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
