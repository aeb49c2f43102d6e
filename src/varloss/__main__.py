from varloss.cli import run

run()
