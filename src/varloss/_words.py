"""Numbers said in words, the one way every message and page says them: a count with its noun in
the right number (`count(1, "epoch")` is "1 epoch"), a duration in the unit a reader expects
(`duration(0.02)` is "under 0.1 s", `duration(3725)` is "1 h 2 min"), and a fraction as a
percentage only where it is a share of a whole (`share`).

Ground layer: imported by the command line, the pipelines' terminal summaries and the HTML pages.
"""

from __future__ import annotations

import math

__all__ = ["count", "duration", "plural", "share"]

# Nouns whose plural is not the noun + "s".
_IRREGULAR = {"bias": "biases", "index": "indices", "loss": "losses", "match": "matches"}


def plural(noun: str, n: float) -> str:
    """`noun` in the number `n` asks for: singular for exactly 1 (and -1), else plural."""
    if abs(n) == 1:
        return noun
    return _IRREGULAR.get(noun, noun + "s")


def count(n: int, noun: str, plural_form: str | None = None) -> str:
    """`n` and its noun: "1 epoch", "0 epochs", "3 runs" (`plural_form` for irregular nouns)."""
    if abs(n) == 1:
        return f"{n} {noun}"
    return f"{n} {plural_form or plural(noun, n)}"


def duration(seconds: float) -> str:
    """A wall time as a reader says it: "under 0.1 s", "0.4 s", "12.3 s", "4 min 5 s",
    "1 h 2 min" (to the nearest second, then down to the unit shown; "unknown" for NaN or a
    negative time)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "unknown"
    if seconds < 0.05:
        return "under 0.1 s"
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def share(part: float | None, whole: float | None, digits: int = 0) -> str | None:
    """`part / whole` as a percentage when it is a share, i.e. `part` and `whole` have the same
    sign and |part| <= |whole| (0% to 100%); None otherwise (a part larger than its whole, of
    the opposite sign, a zero or missing whole): the caller says what happened in words."""
    if part is None or whole is None or not math.isfinite(part) or not math.isfinite(whole):
        return None
    if whole == 0 or part * whole < 0 or abs(part) > abs(whole):
        return None
    return f"{part / whole:.{digits}%}"
