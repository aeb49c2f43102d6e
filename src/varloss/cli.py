"""The `varloss` command. Thin: parse arguments, call the library, print.

Errors users can fix (bad input) are raised as `varloss.errors.InputError` by the library;
the CLI prints their one-sentence message and exits with a non-zero code, no traceback.
"""

from __future__ import annotations

import typer

from varloss import __version__

app = typer.Typer(
    name="varloss",
    help="Measure, explain and correct the variance loss of VAEs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"varloss {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
) -> None:
    """Measure, explain and correct the variance loss of VAEs."""


# ---- commands are added below this line, one section per command (measure, data, train, ...) ----


def run() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    import sys

    from varloss.errors import InputError

    try:
        app(prog_name="varloss")
    except InputError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
