"""`riswb runs`: every run under the runs directory with its status and diagnosis counts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from riswb.commands.options import Format, RunsDirOption, check_format
from riswb.commands.output import console, echo_json
from riswb.diagnose.report import summarize
from riswb.diagnose.rules import diagnose
from riswb.diagnose.text import fmt
from riswb.errors import RiswbError
from riswb.runlog import list_runs, read_run

COLUMNS = ("id", "status", "steps", "opt steps", "final loss", "errors", "warnings", "top finding")
STATUS_STYLE = {"completed": "green", "crashed": "red", "killed": "red", "unreadable": "red",
                "corrupt": "red"}


def _row(path: Path, diagnosed: bool) -> dict[str, Any]:
    """One run's row (the JSON output's element). A run that cannot be read or diagnosed is
    a row marked "unreadable" with the reason, never the end of the listing: one bad run
    must not hide the good ones."""
    row: dict[str, Any] = {"id": path.name, "path": str(path)}
    try:
        loaded = read_run(path)
        summary = summarize(loaded)
        row.update(
            status=summary.status,
            steps=summary.steps,
            opt_steps=summary.opt_steps,
            final_loss=summary.final_loss,
            warnings_log=len(summary.warnings),
            dropped_lines=sum(loaded.dropped.values()),
        )
        if diagnosed:
            diagnosis = diagnose(loaded)
            row["errors"] = diagnosis.counts["error"]
            row["warnings"] = diagnosis.counts["warning"]
            row["top"] = diagnosis.findings[0].id if diagnosis.findings else None
    except Exception as error:  # whatever the run holds, the listing goes on
        reason = str(error) if isinstance(error, RiswbError) else f"{type(error).__name__}: {error}"
        return {"id": path.name, "path": str(path), "status": "unreadable",
                "error": " ".join(reason.split())}
    return row


def _status(row: dict[str, Any]) -> Text:
    text = Text(row["status"], style=STATUS_STYLE.get(row["status"], "yellow"))
    if row.get("dropped_lines"):
        text.append(f" ({row['dropped_lines']} bad lines)", style="yellow")
    return text


def _print(rows: list[dict[str, Any]], quick: bool, seconds: float) -> None:
    out = console()
    table = Table(title=f"{len(rows)} run(s)", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:
        errors = row.get("errors")
        table.add_row(
            Text(row["id"]),
            _status(row),
            fmt(row.get("steps")),
            fmt(row.get("opt_steps")),
            fmt(row.get("final_loss")),
            Text(fmt(errors), style="bold red" if errors else ""),
            fmt(row.get("warnings")),
            Text(row.get("top") or row.get("error") or "-"),
        )
    out.print(table)
    if quick:
        out.print(Text("--quick: diagnosis skipped", style="dim"))
    else:
        out.print(Text(f"diagnosed in {seconds:.2f}s", style="dim"))


def runs_command(
    runs_dir: RunsDirOption = None,
    format: Format = "table",
    quick: Annotated[
        bool, typer.Option("--quick", help="Skip the diagnosis (no error/warning counts).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Only the N most recent runs.")] = 0,
) -> None:
    """List runs: id, status, steps, final loss, and the diagnosis' error/warning counts."""
    format = check_format(format)
    if limit < 0:
        raise RiswbError(f"--limit must be ≥ 0, not {limit}")
    if runs_dir is not None and not runs_dir.is_dir():
        raise RiswbError(f"no runs directory at {runs_dir}")
    paths = list_runs(runs_dir)
    if limit:
        paths = paths[-limit:]
    started = time.perf_counter()
    rows = [_row(path, diagnosed=not quick) for path in paths]
    if format == "json":
        echo_json(rows)
    elif not rows:
        where = runs_dir if runs_dir is not None else "the runs directory"
        console().print(f"no runs under {where}")
    else:
        _print(rows, quick, time.perf_counter() - started)
