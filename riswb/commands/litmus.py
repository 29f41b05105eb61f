"""`riswb litmus`: gradient checks on the bare reference pipeline (no training)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from riswb.commands.options import Format, check_format
from riswb.commands.output import console, echo_json


def litmus_command(
    preset: Annotated[
        str, typer.Option("--preset", help="Simulation preset (small|paper).")
    ] = "small",
    inject: Annotated[
        str | None,
        typer.Option("--inject", help="Build the pipeline with this fault (`riswb faults`)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the scenes and the model.")] = 0,
    format: Format = "table",
) -> None:
    """Gradient checks on the bare reference pipeline (no training); exit 1 on any failure."""
    # imported here: every other command starts without loading the reference pipeline
    from riswb.reference.litmus import run_litmus

    format = check_format(format)
    result = run_litmus(preset=preset, inject=inject, seed=seed)
    if format == "json":
        echo_json(result.to_dict())
    else:
        title = f"riswb litmus: preset {result.preset}, seed {result.seed}" + (
            f", fault {result.inject}" if result.inject else "")
        table = Table(title=title, title_justify="left")
        table.add_column("check", no_wrap=True)
        table.add_column("result", no_wrap=True)
        table.add_column("s", justify="right", no_wrap=True)
        table.add_column("detail", overflow="fold")
        for check in result.checks:
            table.add_row(
                check.name,
                Text("PASS" if check.passed else "FAIL",
                     style="bold green" if check.passed else "bold red"),
                f"{check.seconds:.2f}",
                check.detail,
            )
        out = console()
        out.print(table)
        verdict = (Text("PASS", style="bold green") if result.passed
                   else Text("FAIL", style="bold red"))
        summary = (f"  {len(result.checks) - len(result.failed)}/{len(result.checks)} checks "
                   f"passed in {result.seconds:.1f}s")
        if result.failed:
            summary += f"; failed: {', '.join(result.failed)}"
        out.print(Text.assemble(verdict, summary))
        if result.expected_failures:
            missed = [n for n in result.expected_failures if n not in result.failed]
            note = (f"  fault signature {', '.join(result.expected_failures)}: "
                    + ("all failed, as expected" if not missed
                       else f"NOT failed: {', '.join(missed)}"))
            out.print(Text(note, style="yellow" if missed else "dim"))
    raise typer.Exit(0 if result.passed else 1)
