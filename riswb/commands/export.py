"""`riswb export`: a run's records as TensorBoard event files, Parquet or CSV (docs/export.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riswb.commands.options import RunArgument, RunsDirOption, load_run
from riswb.diagnose.export import TARGETS, export_run


def export_command(
    run: RunArgument,
    to: Annotated[str, typer.Option("--to", help="|".join(TARGETS))],
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write into (the run gets OUT/<run id>/).")
    ],
    runs_dir: RunsDirOption = None,
) -> None:
    """Export a run to TensorBoard, Parquet or CSV: every scalar, spectrum and event."""
    result = export_run(load_run(run, runs_dir), to, out)
    typer.echo(f"wrote {len(result.files)} {result.target} file(s) to {result.directory}")
    width = max(map(len, result.counts), default=0)
    for name, count in result.counts.items():
        typer.echo(f"  {name:<{width}}  {count}")
    if result.target == "tensorboard":
        typer.echo(f"view: tensorboard --logdir {out}")
