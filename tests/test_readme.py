"""Every `varloss ...` command line in the README's code blocks parses against today's CLI.

A renamed or removed flag makes the README lie to the first user who copies it; this test
fails on that instead. It parses each command (options, arguments, their types) without running
it; what the commands compute is tested where each command is.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from varloss.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """The `varloss` command lines of the README's fenced code blocks (continuations joined)."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("varloss "):
                commands.append(line)
    return commands


def test_the_readme_has_commands_of_every_kind() -> None:
    named = {shlex.split(line)[1] for line in readme_commands()}
    assert {"measure", "train", "study", "correct", "fid"} <= named


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_parses(line: str) -> None:
    group = typer.main.get_command(app)
    name, *arguments = shlex.split(line)[1:]
    parent = group.context_class(group)
    command = group.get_command(parent, name)
    assert command is not None, f"README: no command {name!r} in {line!r}"
    try:
        command.make_context(name, arguments, parent=parent)
    except Exception as error:  # typer's own click: its UsageError is not click.UsageError
        pytest.fail(f"README command {line!r} does not parse: {error}")
