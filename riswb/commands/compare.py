"""`riswb compare`: two runs side by side, findings new/resolved/both, an overlay plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riswb.commands.options import Format, RunsDirOption, ThresholdOption, check_format, load_run
from riswb.commands.output import console, echo_json
from riswb.diagnose.compare import compare, render_table, write_overlay
from riswb.diagnose.rules import Thresholds
from riswb.errors import RiswbError


def compare_command(
    run_a: Annotated[str, typer.Argument(help="Baseline run (path, id or latest).")],
    run_b: Annotated[str, typer.Argument(help="Candidate run (path, id or latest).")],
    format: Format = "table",
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write an overlay PNG of the total loss here.")
    ] = None,
    runs_dir: RunsDirOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Two runs side by side: metrics, findings new/resolved/both, overlay plot."""
    format = check_format(format)
    thresholds = Thresholds.parse(threshold)
    a, b = load_run(run_a, runs_dir), load_run(run_b, runs_dir)
    comparison = compare(a, b, thresholds=thresholds)
    written = None
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise RiswbError(f"--plot writes a PNG: give a .png path, not {plot}")
        try:
            written = str(write_overlay(a, b, plot))
        except OSError as error:
            raise RiswbError(f"cannot write {plot}: {error}") from None
    if format == "json":
        echo_json({**comparison.to_dict(), "plot": written})
    else:
        render_table(comparison, written, console())
