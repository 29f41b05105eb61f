"""`riswb gate`: pass (exit 0) or fail (exit 1) a run for CI, optionally as JUnit XML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from riswb.commands.options import (
    Format,
    RunArgument,
    RunsDirOption,
    ThresholdOption,
    check_format,
    load_run,
)
from riswb.commands.output import console, echo_json
from riswb.diagnose.gate import GateResult, gate, write_junit
from riswb.diagnose.rules import Thresholds
from riswb.diagnose.text import fmt_evidence


def _print(result: GateResult, junit: Path | None) -> None:
    out = console()
    verdict = Text(
        "PASS" if result.passed else "FAIL", style="bold green" if result.passed else "bold red"
    )
    out.print(Text.assemble(verdict, f"  {result.run_id}"))
    for check in result.checks:
        mark = Text("  ✓ " if check.passed else "  ✗ ", style="green" if check.passed else "red")
        out.print(Text.assemble(mark, f"{check.name}: {check.detail}"))
    for finding in result.diagnosis.errors:
        out.print(
            Text(
                f"    [error] {finding.id}: {finding.title} "
                f"({fmt_evidence(finding.evidence, limit=4)})",
                style="red",
            )
        )
    warnings = [f.id for f in result.findings if f.severity == "warning"]
    if warnings:
        out.print(Text(f"  warnings (do not fail the gate): {', '.join(warnings)}", style="yellow"))
    if junit is not None:
        out.print(f"  junit: {junit}")


def gate_command(
    run: RunArgument,
    min_loss_drop: Annotated[
        float | None,
        typer.Option(
            "--min-loss-drop",
            help="Relative fall of the total loss required; the same as --threshold "
            "min_loss_drop=X [default: Thresholds.min_loss_drop]",
        ),
    ] = None,
    min_moving: Annotated[
        float | None,
        typer.Option(
            "--min-moving",
            help="Fraction of optimizer steps on which params must move; the same as "
            "--threshold min_moving_fraction=X [default: Thresholds.min_moving_fraction]",
        ),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write JUnit XML here.")
    ] = None,
    format: Format = "table",
    runs_dir: RunsDirOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Pass (exit 0) when params move, the loss drops and no error finding; else exit 1."""
    format = check_format(format)
    shorthands = {"min_loss_drop": min_loss_drop, "min_moving_fraction": min_moving}
    thresholds = Thresholds.parse(threshold).overrides(
        **{name: value for name, value in shorthands.items() if value is not None}
    )
    result = gate(load_run(run, runs_dir), thresholds)
    if junit is not None:
        write_junit(result, junit)
    if format == "json":
        echo_json({**result.to_dict(), "junit": str(junit) if junit is not None else None})
    else:
        _print(result, junit)
    raise typer.Exit(0 if result.passed else 1)
