"""`riswb faults`: list the bug zoo — each fault's name, what it breaks, the
docs/failures.md item it reproduces, the findings that must name it and the litmus checks that
must fail with it. Run one with `riswb overfit --inject NAME`."""

from __future__ import annotations

import typer

from riswb.commands.options import Format, check_format
from riswb.jsonsafe import dumps


def faults_command(format: Format = "table") -> None:
    """List the fault injections of the bug zoo and what must detect each one."""
    from riswb.reference.faults import FAULTS

    fmt = check_format(format)
    faults = [fault.to_dict() for fault in FAULTS.values()]
    if fmt == "json":
        typer.echo(dumps(faults))
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
