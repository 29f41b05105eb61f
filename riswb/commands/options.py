"""The options and arguments the commands share, declared once in `Annotated` style.

Every command with output as data takes `format: Format = "table"` (or `DocumentFormat`
where markdown is offered too) and checks it first with `check_format(format)` /
`check_format(format, DOCUMENT_FORMATS)`. Choices are checked in the command body, not by
click, so that a bad value is the CLI's one-line usage error (exit 2, riswb.cli). A RUN
argument completes in the shell to "latest" and the run ids (`complete_run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riswb.errors import RiswbError
from riswb.runlog import Run, list_runs, read_run, resolve_run

FORMATS = ("table", "json")
DOCUMENT_FORMATS = ("table", "json", "markdown")

Format = Annotated[str, typer.Option("--format", "-f", help="table|json")]
DocumentFormat = Annotated[str, typer.Option("--format", "-f", help="table|json|markdown")]


def check_format(value: str, allowed: tuple[str, ...] = FORMATS) -> str:
    """The --format value, lower-cased; a RiswbError naming the choices when it is not one."""
    value = value.strip().lower()
    if value not in allowed:
        raise RiswbError(f"unknown --format {value!r} (choose from {', '.join(allowed)})")
    return value


def complete_run(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of a RUN: "latest", then the run ids under the runs dir (the
    command's --runs-dir when already typed), newest first."""
    try:
        ids = [path.name for path in reversed(list_runs(ctx.params.get("runs_dir")))]
    except RiswbError:  # an unreadable runs dir completes to nothing, silently
        ids = []
    return [name for name in ("latest", *ids) if name.startswith(incomplete)]


RunArgument = Annotated[
    str,
    typer.Argument(help='Run directory, run id, or "latest".', autocompletion=complete_run),
]
RunsDirOption = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="Where run ids resolve (default $RISWB_RUNS_DIR or ./runs)."),
]
ThresholdOption = Annotated[
    list[str] | None,
    typer.Option(
        "--threshold",
        "-t",
        metavar="NAME=VALUE",
        help="Override a diagnosis threshold (riswb.diagnose.rules.Thresholds); repeatable.",
    ),
]


def load_run(reference: str, runs_dir: Path | None = None) -> Run:
    """A Run from a path, a run id under the runs dir, or "latest"."""
    return read_run(resolve_run(reference, runs_dir))
