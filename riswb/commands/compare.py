"""`riswb compare`: two runs side by side, findings new/resolved/both, an overlay plot.

`--format html` writes one self-contained page with the overlay embedded, by default to
RUN_B/compare-<A id>.html (the candidate's folder, beside its own report.html), and prints
its path; `--out FILE` writes it (or the JSON) to FILE, `--out -` to stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riswb.commands.options import RunsDirOption, ThresholdOption, check_format, load_run
from riswb.commands.output import console
from riswb.commands.report import OutOption, write_document
from riswb.diagnose.compare import compare, overlay_bytes, render_table, write_overlay
from riswb.diagnose.render_html import render_comparison_html
from riswb.diagnose.rules import Thresholds
from riswb.errors import RiswbError
from riswb.jsonsafe import dumps

COMPARE_FORMATS = ("table", "json", "html")
CompareFormat = Annotated[str, typer.Option("--format", "-f", help="table|json|html")]


def compare_command(
    run_a: Annotated[str, typer.Argument(help="Baseline run (path, id or latest).")],
    run_b: Annotated[str, typer.Argument(help="Candidate run (path, id or latest).")],
    format: CompareFormat = "table",
    out: OutOption = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write an overlay PNG of the total loss here.")
    ] = None,
    runs_dir: RunsDirOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Two runs side by side: metrics, findings new/resolved/both, overlay plot."""
    format = check_format(format, COMPARE_FORMATS)
    if out is not None and format == "table":
        raise RiswbError("--out writes a document: use it with --format json or html")
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
        write_document(dumps({**comparison.to_dict(), "plot": written}) + "\n", out)
    elif format == "html":
        overlay = Path(written).read_bytes() if written else overlay_bytes(a, b)
        page = render_comparison_html(comparison, overlay)
        write_document(page, out, default=b.path / f"compare-{a.id}.html")
    else:
        render_table(comparison, written, console())
