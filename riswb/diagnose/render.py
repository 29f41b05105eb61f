"""The report for people: `render_table` (rich, for a terminal) and `render_markdown`.

Both read the same `Report` model (riswb.diagnose.report), as does the HTML page
(riswb.diagnose.render_html); its JSON form is `riswb.jsonsafe.dumps(report.to_dict())`.
Tables show at most MAX_ROWS rows here and in HTML (the JSON keeps them all).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table as RichTable
from rich.text import Text

from riswb.diagnose.report import Report
from riswb.diagnose.tables import Table
from riswb.diagnose.text import fmt, fmt_evidence

MAX_ROWS = 20
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
STATUS_STYLE = {"completed": "green", "crashed": "red", "killed": "red"}


def extra_rows_note(table: Table) -> str:
    """The table's note, plus how many rows a page leaves out (JSON keeps them all)."""
    extra = len(table.rows) - MAX_ROWS
    more = f" (+{extra} rows: --format json shows all)" if extra > 0 else ""
    return (table.note + more).strip()


def renderables(report: Report) -> list[RenderableType]:
    """The rich report, one renderable per line or block: printed one by one by
    `render_table`, grouped into one live view by `riswb watch`."""
    out: list[RenderableType] = []
    grid = RichTable.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in report.summary.pairs():
        style = STATUS_STYLE.get(value, "yellow") if key == "status" else ""
        grid.add_row(key, Text(str(value), style=style))
    for warning in report.summary.warnings:
        grid.add_row(Text("warning", style="yellow"), Text(warning, style="yellow"))
    counts = report.diagnosis.counts
    headline = Text(
        report.headline(),
        style="bold red" if counts["error"] else ("yellow" if counts["warning"] else "green"),
    )
    out.append(Panel(Group(grid, headline), title="riswb report", expand=False))

    for rank, finding in enumerate(report.findings, start=1):
        line = Text(f"{rank}. ")
        line.append(f"[{finding.severity.upper()}] ", style=SEVERITY_STYLE[finding.severity])
        line.append(finding.id, style="bold")
        line.append(f" — {finding.title}")
        out.append(line)
        if finding.evidence:
            out.append(Text(f"   evidence: {fmt_evidence(finding.evidence)}"))
        if finding.fix:
            out.append(Text(f"   fix: {finding.fix}", style="green"))
    if not report.findings:
        out.append(Text("No findings: nothing wrong that the rules can see.", style="green"))
    if report.diagnosis.unchecked:
        items = "; ".join(f"{k} ({v})" for k, v in report.diagnosis.unchecked.items())
        out.append(Text(f"not checked: {items}", style="dim"))

    for table in report.tables:
        out.append(Text(table.title, style="bold"))
        rich_table = RichTable(show_lines=False)
        for column in table.columns:
            rich_table.add_column(column, overflow="fold")
        for row in table.rows[:MAX_ROWS]:
            rich_table.add_row(*[Text(fmt(cell)) for cell in row])
        out.append(rich_table)
        note = extra_rows_note(table)
        if note:
            out.append(Text(f"  {note}", style="dim"))
    if report.absent:
        out.append(Text("absent: " + ", ".join(report.absent), style="dim"))
    if report.plots:
        out.append(Text("plots:", style="bold"))
        out += [Text(f"  {path}") for path in report.plots.values()]
    for name, reason in report.plots_skipped.items():
        out.append(Text(f"plot {name} skipped: {reason}", style="dim"))
    return out


def render_table(report: Report, console: Console) -> None:
    """Print the report with rich: summary panel, findings, tables."""
    for renderable in renderables(report):
        console.print(renderable)


def _md_cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    summary = report.summary
    out = [f"# riswb report: {summary.id}", ""]
    out += [f"- **{key}**: {value}" for key, value in summary.pairs()]
    out += [f"- **warning**: {warning}" for warning in summary.warnings]
    out += ["", "## Findings", "", report.headline(), ""]
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
