"""Diagnosis commands: report, gate, runs, compare (internals.md §5; litmus and bench go here too).

Each command is a plain function with Typer annotations, registered in `riswb/cli.py`.
Shared plumbing: `load_run` (path, run id or "latest" → Run), `check_format`, `console`,
`echo_json`, and the `RunsDirOption`/`ThresholdOption`/format option types below.
Bad input raises `RiswbError` (one line, exit 2); a failed check exits 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from riswb.errors import RiswbError
from riswb.runlog import list_runs, read_run, resolve_run

RunArgument = Annotated[str, typer.Argument(help='Run directory, run id, or "latest".')]
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


def check_format(value: str, allowed: tuple[str, ...]) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise RiswbError(f"unknown --format {value!r} (choose from {', '.join(allowed)})")
    return value


def load_run(reference: str, runs_dir: Path | None = None):
    """A Run from a path, a run id under the runs dir, or "latest"."""
    return read_run(resolve_run(reference, runs_dir))


def console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120, highlight=False)


def echo_json(text: str) -> None:
    typer.echo(text)


# --------------------------------------------------------------------------- report


def report_command(
    run: RunArgument,
    format: Annotated[str, typer.Option("--format", "-f", help="table|json|markdown")] = "table",
    no_plots: Annotated[
        bool, typer.Option("--no-plots", help="Do not write RUN/plots/*.png")
    ] = False,
    runs_dir: RunsDirOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Diagnose a run: ranked findings with evidence and a fix, evidence tables, plots."""
    from riswb.diagnose.report import (
        FORMATS,
        build_report,
        parse_thresholds,
        render_json,
        render_markdown,
        render_table,
    )

    fmt = check_format(format, FORMATS)
    thresholds = parse_thresholds(threshold)
    loaded = load_run(run, runs_dir)
    collect_plots = None
    if not no_plots:
        from riswb.diagnose.plots import start_plots

        loaded.kinds()  # group the scalars once, before forking plot workers
        collect_plots = start_plots(loaded, workers=None)  # drawn while we diagnose
    report = build_report(loaded, thresholds)
    if collect_plots is not None:
        plots = collect_plots()
        report.plots = {name: str(path) for name, path in plots.written.items()}
        report.plots_skipped = plots.skipped
    if fmt == "json":
        echo_json(render_json(report))
    elif fmt == "markdown":
        typer.echo(render_markdown(report), nl=False)
    else:
        render_table(report, console())


# --------------------------------------------------------------------------- gate


def gate_command(
    run: RunArgument,
    min_loss_drop: Annotated[
        float | None,
        typer.Option(
            "--min-loss-drop",
            help="Relative fall of the total loss required [default: Thresholds.min_loss_drop]",
        ),
    ] = None,
    min_moving: Annotated[
        float | None,
        typer.Option(
            "--min-moving",
            help="Fraction of optimizer steps on which params must move "
            "[default: Thresholds.min_moving_fraction]",
        ),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write JUnit XML here.")
    ] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table|json")] = "table",
    runs_dir: RunsDirOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Pass (exit 0) when params move, the loss drops and no error finding; else exit 1."""
    import json

    from riswb.diagnose.gate import gate, write_junit
    from riswb.diagnose.report import fmt_evidence, parse_thresholds, strict_json

    fmt = check_format(format, ("table", "json"))
    thresholds = parse_thresholds(threshold)
    loaded = load_run(run, runs_dir)
    result = gate(loaded, min_loss_drop=min_loss_drop, min_moving=min_moving, thresholds=thresholds)
    if junit is not None:
        write_junit(result, junit)
    if fmt == "json":
        data = result.to_dict()
        data["junit"] = str(junit) if junit is not None else None
        echo_json(json.dumps(strict_json(data), indent=2, allow_nan=False))
    else:
        from rich.text import Text

        out = console()
        verdict = Text(
            "PASS" if result.passed else "FAIL", style="bold green" if result.passed else "bold red"
        )
        out.print(Text.assemble(verdict, f"  {result.run_id}"))
        for check in result.checks:
            mark = Text(
                "  ✓ " if check.passed else "  ✗ ", style="green" if check.passed else "red"
            )
            out.print(Text.assemble(mark, f"{check.name}: {check.detail}"))
        for finding in result.findings:
            if finding["severity"] == "error":
                out.print(
                    Text(
                        f"    [error] {finding['id']}: {finding['title']} "
                        f"({fmt_evidence(finding['evidence'], limit=4)})",
                        style="red",
                    )
                )
        warnings = [f["id"] for f in result.findings if f["severity"] == "warning"]
        if warnings:
            out.print(
                Text(f"  warnings (do not fail the gate): {', '.join(warnings)}", style="yellow")
            )
        if junit is not None:
            out.print(f"  junit: {junit}")
    raise typer.Exit(0 if result.passed else 1)


# --------------------------------------------------------------------------- runs


def _runs_row(path: Path, diagnose: bool) -> dict[str, Any]:
    from riswb.diagnose.report import diagnosis_parts, run_diagnosis, summarize

    row: dict[str, Any] = {"id": path.name, "path": str(path)}
    try:
        loaded = read_run(path)
        summary = summarize(loaded)
    except RiswbError as error:
        row.update(status="unreadable", error=str(error))
        return row
    row.update(
        status=summary["status"],
        steps=summary["steps"],
        opt_steps=summary["opt_steps"],
        final_loss=summary["final_loss"],
        warnings_log=len(summary["warnings"]),
    )
    if diagnose:
        findings, _ = diagnosis_parts(run_diagnosis(loaded))
        row["errors"] = sum(f["severity"] == "error" for f in findings)
        row["warnings"] = sum(f["severity"] == "warning" for f in findings)
        row["top"] = findings[0]["id"] if findings else None
    return row


def runs_command(
    runs_dir: RunsDirOption = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table|json")] = "table",
    quick: Annotated[
        bool, typer.Option("--quick", help="Skip the diagnosis (no error/warning counts).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Only the N most recent runs.")] = 0,
) -> None:
    """List runs: id, status, steps, final loss, and the diagnosis' error/warning counts."""
    import json

    from riswb.diagnose.report import fmt, strict_json

    fmt_name = check_format(format, ("table", "json"))
    if limit < 0:
        raise RiswbError(f"--limit must be ≥ 0, not {limit}")
    if runs_dir is not None and not runs_dir.is_dir():
        raise RiswbError(f"no runs directory at {runs_dir}")
    paths = list_runs(runs_dir)
    if limit:
        paths = paths[-limit:]
    started = time.perf_counter()
    rows = [_runs_row(path, diagnose=not quick) for path in paths]
    if fmt_name == "json":
        echo_json(json.dumps(strict_json(rows), indent=2, allow_nan=False))
        return
    out = console()
    if not rows:
        where = runs_dir if runs_dir is not None else "the runs directory"
        out.print(f"no runs under {where}")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(rows)} run(s)", title_justify="left")
    for column in (
        "id",
        "status",
        "steps",
        "opt steps",
        "final loss",
        "errors",
        "warnings",
        "top finding",
    ):
        table.add_column(column, overflow="fold")
    status_style = {"completed": "green", "crashed": "red", "killed": "red", "unreadable": "red"}
    for row in rows:
        errors = row.get("errors")
        table.add_row(
            Text(row["id"]),
            Text(row["status"], style=status_style.get(row["status"], "yellow")),
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
        out.print(Text(f"diagnosed in {time.perf_counter() - started:.2f}s", style="dim"))


# --------------------------------------------------------------------------- compare


def compare_command(
    run_a: Annotated[str, typer.Argument(help="Baseline run (path, id or latest).")],
    run_b: Annotated[str, typer.Argument(help="Candidate run (path, id or latest).")],
    format: Annotated[str, typer.Option("--format", "-f", help="table|json")] = "table",
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write an overlay PNG of the total loss here.")
    ] = None,
    runs_dir: RunsDirOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Two runs side by side: metrics, findings new/resolved/both, overlay plot."""
    from riswb.diagnose.compare import compare, render_json, render_table, write_overlay
    from riswb.diagnose.report import parse_thresholds

    fmt = check_format(format, ("table", "json"))
    thresholds = parse_thresholds(threshold)
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
    if fmt == "json":
        echo_json(render_json(comparison, written))
    else:
        render_table(comparison, written, console())


# --------------------------------------------------------------------------- litmus


def litmus_command(
    preset: Annotated[
        str, typer.Option("--preset", help="Simulation preset (small|paper).")
    ] = "small",
    inject: Annotated[
        str | None,
        typer.Option("--inject", help="Build the pipeline with this fault (`riswb faults`)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the scenes and the model.")] = 0,
    format: Annotated[str, typer.Option("--format", "-f", help="table|json")] = "table",
) -> None:
    """Gradient checks on the bare reference pipeline (no training); exit 1 on any failure."""
    import json

    from riswb.diagnose.report import strict_json
    from riswb.reference.litmus import run_litmus

    fmt = check_format(format, ("table", "json"))
    result = run_litmus(preset=preset, inject=inject, seed=seed)
    if fmt == "json":
        echo_json(json.dumps(strict_json(result.to_dict()), indent=2, allow_nan=False))
    else:
        from rich.table import Table
        from rich.text import Text

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


# --------------------------------------------------------------------------- bench


def bench_command(
    steps: Annotated[int, typer.Option(
        "--steps", help="Timed steps per variant per round (term-gradient samples are "
                        "pinned into each round and amortized over their real interval).")] = 50,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds (per-round spread).")] = 5,
    warmup: Annotated[int, typer.Option(
        "--warmup", help="Untimed steps per variant first (the term-gradient probe "
                         "calibrates in its first 10).")] = 20,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="torch intra-op threads while measuring (default: torch's).")] = None,
    model: Annotated[
        str, typer.Option("--model", help="mlp|reference|both: which loop(s) to measure.")
    ] = "both",
    per_probe: Annotated[
        bool, typer.Option("--per-probe/--no-per-probe", help="Also time each probe alone.")
    ] = True,
    format: Annotated[str, typer.Option("--format", "-f", help="table|json")] = "table",
) -> None:
    """Probe overhead over a plain loop, per probe and in total (budget 1.10×, target 1.05×),
    on a plain MLP and on the reference model, measured interleaved in one process."""
    import json

    from riswb.bench import BUDGET, MODELS, run_bench
    from riswb.diagnose.report import strict_json

    fmt = check_format(format, ("table", "json"))
    if steps < 1 or rounds < 1 or warmup < 0:
        raise RiswbError(f"--steps and --rounds must be ≥ 1 and --warmup ≥ 0 "
                         f"(got {steps}, {rounds}, {warmup})")
    model = model.strip().lower()
    if model not in (*MODELS, "both"):
        raise RiswbError(f"unknown --model {model!r} (choose from {', '.join(MODELS)}, both)")
    models = list(MODELS) if model == "both" else [model]
    if threads is not None and threads < 1:
        raise RiswbError(f"--threads must be ≥ 1 (got {threads})")
    results = {name: run_bench(model=name, steps=steps, rounds=rounds, warmup=warmup,
                               per_probe=per_probe, threads=threads) for name in models}
    if fmt == "json":
        data = {"budget": BUDGET, "passed": all(r.passed for r in results.values()),
                "models": {name: r.to_dict() for name, r in results.items()}}
        echo_json(json.dumps(strict_json(data), indent=2, allow_nan=False))
        return
    from rich.table import Table
    from rich.text import Text

    def mark(ratio: float) -> Text:
        style = "green" if ratio <= 1.05 else "yellow" if ratio <= BUDGET else "bold red"
        return Text(f"{ratio:.3f}×" + ("" if ratio <= BUDGET else " OVER"), style=style)

    out = console()
    first = next(iter(results.values())).config
    table = Table(
        title=f"riswb bench: probe overhead vs a plain loop ({first['steps']} interleaved "
              f"steps per variant, summed; budget {BUDGET:.2f}×, target 1.05×)",
        title_justify="left",
    )
    table.add_column("variant", no_wrap=True)
    for name in results:
        table.add_column(f"{name} ms/step", justify="right")
        table.add_column(f"{name} ratio", justify="right")
    table.add_row("plain", *[c for r in results.values() for c in (f"{r.plain_ms:.2f}", "1.000×")])
    table.add_row(Text("default (all)", style="bold"),
                  *[c for r in results.values() for c in (f"{r.ms['default']:.2f}",
                                                           mark(r.total_ratio))])
    probes = list(next(iter(results.values())).per_probe)
    for probe in probes:
        table.add_row(f"  {probe}", *[c for r in results.values()
                                      for c in (f"{r.ms[probe]:.2f}", mark(r.per_probe[probe]))])
    out.print(table)
    for name, r in results.items():
        c = r.config
        verdict = Text("within" if r.passed else "OVER", style="green" if r.passed else "bold red")
        out.print(Text.assemble(f"  {name} (batch {c['batch']}, {c['threads']} threads, "
                                f"{c['steps']} steps, term gradients every "
                                f"{c.get('term_grad_every')}): default "
                                f"probes {r.total_ratio:.3f}× the plain loop, ", verdict,
                                f" the {BUDGET:.2f}× budget"))
