"""The `varloss` command: parse, call the library, print. One module per command.

    app.py         the typer app, --version/--plugin, the command class, `run` (entry point)
    registries.py  registry names for help texts (families, losses, methods, extractors, ...)
    common.py      the variance table and small parsers shared by commands
    measure.py train.py correct.py study.py fid.py data.py report.py weights.py   one command each

Start-up cost, and why the commands import the library inside their functions: measured on
this project's 2-core machine (Python 3.11, torch 2.13, CPU; the fastest of 4 runs of
`python -c "import ..."`, machine shared), importing `varloss.cli` takes 2.1 s, what `import
torch` alone takes; importing what the commands use as well (pipelines, samplers, report,
quality with torchmetrics, figures with matplotlib, models, data) takes 4.4 s. Imports inside
command functions keep those 2.3 s off `varloss --help`, off every other command and off each
torchrun rank's start; each such import says so in a short comment.
"""

from varloss.cli import (  # noqa: F401 (registers)
    correct,
    data,
    fid,
    measure,
    report,
    study,
    train,
    weights,
)
from varloss.cli.app import app, command_line, run
from varloss.cli.common import print_variance_table

__all__ = ["app", "command_line", "print_variance_table", "run"]
