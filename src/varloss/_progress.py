"""Progress bars (tqdm) that behave in logs as well as in terminals.

On a terminal a bar redraws up to ten times a second; when stderr goes to a file or a pipe (CI,
`make demo | tee`, a batch job) every redraw becomes another line, so bars redraw at most every
30 seconds there.
"""

from __future__ import annotations

import sys
from typing import Any

LOG_INTERVAL_SECONDS = 30.0


def say(message: str, topic: str = "data") -> None:
    """One progress or fallback message on stderr, as `varloss.TOPIC: message` (the data cache,
    weights, fid statistics), so --json output on stdout stays clean."""
    print(f"varloss.{topic}: {message}", file=sys.stderr, flush=True)


def interactive() -> bool:
    """True when stderr (where the bars go) is a terminal."""
    return sys.stderr.isatty()


def progress_bar(iterable: Any = None, **options: Any) -> Any:
    """`tqdm.auto.tqdm(iterable, **options)`, redrawn every 30 s at most when not interactive."""
    from tqdm.auto import tqdm

    if not interactive():
        options.setdefault("mininterval", LOG_INTERVAL_SECONDS)
        options.setdefault("maxinterval", max(LOG_INTERVAL_SECONDS, options["mininterval"]))
    return tqdm(iterable, **options)
