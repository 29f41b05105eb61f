"""The report for people: `render_table` (rich, for a terminal) and `render_markdown`.

Both read the same `Report` model (riswb.diagnose.report); its JSON form is
`riswb.jsonsafe.dumps(report.to_dict())`. Tables show at most MAX_ROWS rows here (the
JSON keeps them all).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table as RichTable
from rich.text import Text

from riswb.diagnose.report import Report, Summary
from riswb.diagnose.text import fmt, fmt_duration, fmt_evidence

MAX_ROWS = 20
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
STATUS_STYLE = {"completed": "green", "crashed": "red", "killed": "red"}


def _summary_pairs(summary: Summary) -> list[tuple[str, str]]:
    pairs = [
        ("run", summary.id),
        ("status", summary.status),
        ("steps", fmt(summary.steps)),
        ("optimizer steps", fmt(summary.opt_steps)),
        ("duration", fmt_duration(summary.duration_s)),
        ("final loss", fmt(summary.final_loss)),
    ]
    if summary.best_loss is not None:
        pairs.append(("best loss", f"{fmt(summary.best_loss)} at step {summary.best_step}"))
    if summary.final_terms:
        terms = summary.final_terms.items()
        pairs.append(("final terms", ", ".join(f"{k}={fmt(v)}" for k, v in terms)))
    return pairs


def _headline(report: Report) -> str:
    counts = report.diagnosis.counts
    return f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info"


def render_table(report: Report, console: Console) -> None:
    """Print the report with rich: summary panel, findings, tables."""
    grid = RichTable.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in _summary_pairs(report.summary):
        style = STATUS_STYLE.get(value, "yellow") if key == "status" else ""
        grid.add_row(key, Text(str(value), style=style))
    for warning in report.summary.warnings:
        grid.add_row(Text("warning", style="yellow"), Text(warning, style="yellow"))
    counts = report.diagnosis.counts
    headline = Text(
        _headline(report),
        style="bold red" if counts["error"] else ("yellow" if counts["warning"] else "green"),
    )
    console.print(Panel(Group(grid, headline), title="riswb report", expand=False))

    for rank, finding in enumerate(report.findings, start=1):
        line = Text(f"{rank}. ")
        line.append(f"[{finding.severity.upper()}] ", style=SEVERITY_STYLE[finding.severity])
        line.append(finding.id, style="bold")
        line.append(f" — {finding.title}")
        console.print(line)
        if finding.evidence:
            console.print(Text(f"   evidence: {fmt_evidence(finding.evidence)}"))
        if finding.fix:
            console.print(Text(f"   fix: {finding.fix}", style="green"))
    if not report.findings:
        console.print(Text("No findings: nothing wrong that the rules can see.", style="green"))
    if report.diagnosis.unchecked:
        items = "; ".join(f"{k} ({v})" for k, v in report.diagnosis.unchecked.items())
        console.print(Text(f"not checked: {items}", style="dim"))

    for table in report.tables:
        console.print(Text(table.title, style="bold"))
        rich_table = RichTable(show_lines=False)
        for column in table.columns:
            rich_table.add_column(column, overflow="fold")
        for row in table.rows[:MAX_ROWS]:
            rich_table.add_row(*[Text(fmt(cell)) for cell in row])
        console.print(rich_table)
        extra = len(table.rows) - MAX_ROWS
        note = table.note + (f" (+{extra} rows: --format json shows all)" if extra > 0 else "")
        if note.strip():
            console.print(Text(f"  {note.strip()}", style="dim"))
    if report.absent:
        console.print(Text("absent: " + ", ".join(report.absent), style="dim"))
    if report.plots:
        console.print(Text("plots:", style="bold"))
        for path in report.plots.values():
            console.print(Text(f"  {path}"))
    for name, reason in report.plots_skipped.items():
        console.print(Text(f"plot {name} skipped: {reason}", style="dim"))


def _md_cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    summary = report.summary
    out = [f"# riswb report: {summary.id}", ""]
    out += [f"- **{key}**: {value}" for key, value in _summary_pairs(summary)]
    out += [f"- **warning**: {warning}" for warning in summary.warnings]
    out += ["", "## Findings", "", _headline(report), ""]
    for rank, finding in enumerate(report.findings, start=1):
        out.append(f"{rank}. **{finding.severity.upper()}** `{finding.id}`: {finding.title}")
        if finding.evidence:
            out.append(f"   - evidence: {fmt_evidence(finding.evidence)}")
        if finding.fix:
            out.append(f"   - fix: {finding.fix}")
    if report.diagnosis.unchecked:
        items = "; ".join(f"`{k}` ({v})" for k, v in report.diagnosis.unchecked.items())
        out += ["", f"Not checked: {items}"]
    for table in report.tables:
        out += ["", f"## {table.title}", ""]
        out.append("| " + " | ".join(table.columns) + " |")
        out.append("|" + "---|" * len(table.columns))
        for row in table.rows[:MAX_ROWS]:
            out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
        if table.note:
            out += ["", f"_{table.note}_"]
    if report.absent:
        out += ["", "Absent: " + ", ".join(report.absent)]
    if report.plots:
        out += ["", "## Plots", ""]
        out += [f"![{name}]({path})" for name, path in report.plots.items()]
    out += [f"- plot `{name}` skipped: {reason}" for name, reason in report.plots_skipped.items()]
    return "\n".join(out) + "\n"
