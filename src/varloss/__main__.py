"""`python -m varloss ...` (and `torchrun -m varloss train ...`): the `varloss` command."""

from varloss.cli import run

run()
