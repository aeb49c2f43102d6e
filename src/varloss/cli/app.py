"""The typer application: global options (--version, --plugin), the command class, `run`.

`run` is the console-script entry point (`varloss = varloss.cli:run`): a user error
(`InputError`) prints one sentence on stderr and exits 2, a failed training exits 3, an
operating-system error (disk full, permission denied) exits 1; never a traceback.
"""

from __future__ import annotations

import inspect
import os
import shlex
import sys

import click
import typer
from typer.core import TyperCommand

from varloss._version import __version__
from varloss.cli.common import check_finite_options
from varloss.cli.registries import fill_registry_names
from varloss.errors import InputError, TrainingError

app = typer.Typer(
    name="varloss",
    help="Measure, explain and correct the variance loss of VAEs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class VarlossCommand(TyperCommand):
    """A typer command whose help lists the registries as they are when it is shown (plugins
    loaded by --plugin included), and whose `optional_values` options may be given bare.

    `optional_values = {"--fid": "on"}` makes `--fid` alone mean `--fid on` (typer has no
    options with an optional value): when `--fid` ends the line or another option follows it,
    the bare value is put in; any other next word is its value (and checked by the command).
    """

    optional_values: dict[str, str] = {}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given: list[str] = []
        for index, word in enumerate(args):
            given.append(word)
            if word in self.optional_values:
                following = args[index + 1] if index + 1 < len(args) else "-"
                if following.startswith("-"):
                    given.append(self.optional_values[word])
        return super().parse_args(ctx, given)

    def invoke(self, ctx: click.Context) -> object:
        check_finite_options(ctx)
        return super().invoke(ctx)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for item in [self, *self.params]:
            template = getattr(item, "_help_template", None)
            if template is None:
                template = item.help or ""
                if item is self:  # the docstring's paragraphs, reflowed by rich to the terminal
                    template = _paragraphs(template)
                item._help_template = template  # type: ignore[union-attr]
            item.help = fill_registry_names(template)
        super().format_help(ctx, formatter)


def _paragraphs(text: str) -> str:
    """A docstring's paragraphs with their source line breaks removed: typer's rich help keeps
    single line breaks after the first paragraph, which a terminal of another width wraps into
    ragged lines."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def command(name: str, **optional_values: str):
    """`@command("train")`: register a VarlossCommand; `optional_values` as in its docstring,
    keyed by option name without dashes (`fid="on"`)."""
    cls = type(
        f"{name.title()}Command",
        (VarlossCommand,),
        {"optional_values": {f"--{k}": v for k, v in optional_values.items()}},
    )
    return app.command(name, cls=cls)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"varloss {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
    plugin: list[str] = typer.Option(
        None,
        "--plugin",
        help="Import a module (or .py file) that registers your own model families or feature "
        "extractors, before the command: `varloss --plugin my_models train --family mine ...`. "
        "Repeatable; also "
        "VARLOSS_PLUGINS. Study runs in other processes get it through VARLOSS_PLUGINS too.",
    ),
) -> None:
    """Measure, explain and correct the variance loss of VAEs."""
    if plugin:
        # here, not at the top: varloss.models adds ~0.3 s to every start (cli/__init__.py)
        from varloss.models import PLUGINS_ENV, load_plugins

        load_plugins(plugin)
        # worker processes (study --jobs, torchrun ranks) import them again from the environment
        known = [p for p in os.environ.get(PLUGINS_ENV, "").split(",") if p]
        os.environ[PLUGINS_ENV] = ",".join(dict.fromkeys([*known, *plugin]))


def command_line() -> str:
    """This invocation as a shell command (`varloss ...`), recorded in results and reports."""
    return shlex.join(["varloss", *sys.argv[1:]])


def fail(message: str, code: int) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.exit(code)


def run() -> None:
    """Console-script entry point: user errors become one line on stderr, never a traceback."""
    try:
        app(prog_name="varloss")
    except InputError as error:
        fail(str(error), 2)
    except TrainingError as error:
        fail(str(error), 3)
    except OSError as error:  # the machine's refusal (disk full, permissions), not a bug of ours
        fail(f"{error.strerror or error} ({error.filename})" if error.filename else str(error), 1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
