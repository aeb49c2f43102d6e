from varloss.cli import app

app(prog_name="varloss")
