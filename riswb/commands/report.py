"""`riswb report`: ranked findings with evidence and a fix, evidence tables, plots."""

from __future__ import annotations

from typing import Annotated

import typer

from riswb.commands.options import (
    DOCUMENT_FORMATS,
    DocumentFormat,
    RunArgument,
    RunsDirOption,
    ThresholdOption,
    check_format,
    load_run,
)
from riswb.commands.output import console, echo_json
from riswb.diagnose.plots import start_plots
from riswb.diagnose.render import render_markdown, render_table
from riswb.diagnose.report import build_report
from riswb.diagnose.rules import Thresholds


def report_command(
    run: RunArgument,
    format: DocumentFormat = "table",
    no_plots: Annotated[
        bool, typer.Option("--no-plots", help="Do not write RUN/plots/*.png")
    ] = False,
    runs_dir: RunsDirOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Diagnose a run: ranked findings with evidence and a fix, evidence tables, plots."""
    format = check_format(format, DOCUMENT_FORMATS)
    thresholds = Thresholds.parse(threshold)
    loaded = load_run(run, runs_dir)
    collect_plots = None
    if not no_plots:
        loaded.kinds()  # group the scalars once, before forking plot workers
        collect_plots = start_plots(loaded, workers=None)  # drawn while we diagnose
    report = build_report(loaded, thresholds)
    if collect_plots is not None:
        plots = collect_plots()
        report.plots = {name: str(path) for name, path in plots.written.items()}
        report.plots_skipped = plots.skipped
    if format == "json":
        echo_json(report.to_dict())
    elif format == "markdown":
        typer.echo(render_markdown(report), nl=False)
    else:
        render_table(report, console())
