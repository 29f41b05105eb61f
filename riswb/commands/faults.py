"""`riswb faults`: list the bug zoo — each fault's name, what it breaks, the
docs/failures.md item it reproduces, the findings that must name it and the litmus checks that
must fail with it. Run one with `riswb overfit --inject NAME`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from riswb.errors import RiswbError


def faults_command(
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
) -> None:
    """List the fault injections of the bug zoo and what must detect each one."""
    from riswb.reference.faults import FAULTS

    fmt = fmt.strip().lower()
    if fmt not in ("table", "json"):
        raise RiswbError(f"unknown --format {fmt!r} (choose from table, json)")
    faults = [fault.to_dict() for fault in FAULTS.values()]
    if fmt == "json":
        typer.echo(json.dumps(faults, indent=2))
        return

    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"riswb fault zoo ({len(faults)} faults) — run one with "
                        "`riswb overfit --inject NAME`", show_lines=True)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("description")
    table.add_column("failure", no_wrap=True)
    table.add_column("overrides")
    table.add_column("expects (findings)")
    table.add_column("litmus")
    for fault in faults:
        table.add_row(fault["name"], fault["description"], fault["failure"],
                      fault["overrides"] or "(config only)",
                      "\n".join(fault["expects"]) or "-", "\n".join(fault["litmus"]) or "-")
    Console(width=None if sys.stdout.isatty() else 160, highlight=False).print(table)
