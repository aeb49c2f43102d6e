"""Errors a user can fix. The CLI prints their message (one sentence) and exits non-zero."""


class InputError(ValueError):
    """Bad input at the boundary: the message names the input and what was expected."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what was kept and why."""
