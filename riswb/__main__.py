"""`python -m riswb` runs the CLI (the same app as the `riswb` console script)."""

from riswb.cli import app

app(prog_name="riswb")
