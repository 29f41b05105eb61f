"""`riswb report`: ranked findings with evidence and a fix, evidence tables, plots.

`--format html` writes one self-contained page (riswb.diagnose.render_html) to RUN/report.html
by default and prints its path: HTML is for a browser, not a terminal, and the run directory
already holds the PNGs it embeds. `--out FILE` writes any document format (json, markdown,
html) to FILE instead and prints FILE; `--out -` prints the document to stdout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from riswb.commands.options import (
    DOCUMENT_FORMATS,
    RunArgument,
    RunsDirOption,
    ThresholdOption,
    check_format,
    load_run,
)
from riswb.commands.output import console
from riswb.diagnose.plots import start_plots
from riswb.diagnose.render import render_markdown, render_table
from riswb.diagnose.render_html import render_html
from riswb.diagnose.report import build_report
from riswb.diagnose.rules import Thresholds
from riswb.errors import RiswbError
from riswb.jsonsafe import dumps

REPORT_FORMATS = (*DOCUMENT_FORMATS, "html")
ReportFormat = Annotated[str, typer.Option("--format", "-f", help="table|json|markdown|html")]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Write the document here ('-': stdout). html defaults to RUN/report.html.",
    ),
]
STDOUT = Path("-")


def write_document(text: str, out: Path | None, default: Path | None = None) -> None:
    """Print `text`, or write it to `out` (else `default`) and print that path.

    The file is replaced atomically, so a browser reloading it never sees half a page."""
    target = out if out is not None else default
    if target is None or target == STDOUT:
        typer.echo(text, nl=False)
        return
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    except OSError as error:
        raise RiswbError(f"cannot write {target}: {error}") from None
    typer.echo(str(target))


def report_command(
    run: RunArgument,
    format: ReportFormat = "table",
    out: OutOption = None,
    no_plots: Annotated[
        bool, typer.Option("--no-plots", help="Do not write RUN/plots/*.png")
    ] = False,
    runs_dir: RunsDirOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Diagnose a run: ranked findings with evidence and a fix, evidence tables, plots."""
    format = check_format(format, REPORT_FORMATS)
    if out is not None and format == "table":
        raise RiswbError("--out writes a document: use it with --format json, markdown or html")
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
        write_document(dumps(report.to_dict()) + "\n", out)
    elif format == "markdown":
        write_document(render_markdown(report), out)
    elif format == "html":
        write_document(render_html(report), out, default=loaded.path / "report.html")
    else:
        render_table(report, console())
