"""Two runs side by side: metrics, findings diff (new/resolved/both), an overlay plot.

Run A is the baseline and run B the candidate: a finding "new" is in B only, "resolved"
in A only, "both" in each (with the severities of both).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from riswb.diagnose.frames import col, value_columns
from riswb.diagnose.report import summarize
from riswb.diagnose.rules import SEVERITY_RANK, Diagnosis, Finding, Thresholds, diagnose
from riswb.diagnose.text import fmt
from riswb.runlog import Run

Change = Literal["new", "both", "resolved"]
CHANGE_ORDER: dict[Change, int] = {"new": 0, "both": 1, "resolved": 2}


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    a: Any  # a number, a status string, or None where the run lacks the metric
    b: Any
    delta: float | None  # b − a when both are numbers


@dataclass(frozen=True)
class FindingChange:
    id: str
    change: Change
    severity_a: str | None
    severity_b: str | None
    title: str


@dataclass
class Comparison:
    run_a: str
    run_b: str
    metrics: list[MetricDelta]
    findings: list[FindingChange]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "metrics": [dataclasses.asdict(m) for m in self.metrics],
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }


def _last(run: Run, kind: str) -> dict[str, float]:
    """The last value of each key as logged (a NaN at the end is the run's result, not a gap)."""
    frame = run.kind(kind)
    return {c: float(col(frame, c)[-1]) for c in value_columns(frame)}


def _metrics(run: Run) -> dict[str, Any]:
    summary = summarize(run)
    out: dict[str, Any] = {
        "status": summary.status,
        "steps": summary.steps,
        "opt_steps": summary.opt_steps,
        "duration_s": summary.duration_s,
        "best loss/total": summary.best_loss,
    }
    out.update({f"final loss/{k}": v for k, v in _last(run, "loss").items()})
    out.update({f"final eval/{k}": v for k, v in _last(run, "eval").items()})
    return out


def _delta(a: Any, b: Any) -> float | None:
    numbers = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)]
    return b - a if all(numbers) else None


def _most_severe(diagnosis: Diagnosis) -> dict[str, Finding]:
    by_id: dict[str, Finding] = {}
    for finding in diagnosis.findings:  # ranked: the first of an id is its most severe
        by_id.setdefault(finding.id, finding)
    return by_id


def compare(
    run_a: Run,
    run_b: Run,
    diagnosis_a: Diagnosis | None = None,
    diagnosis_b: Diagnosis | None = None,
    thresholds: Thresholds | None = None,
) -> Comparison:
    metrics_a, metrics_b = _metrics(run_a), _metrics(run_b)
    names = list(metrics_a) + [k for k in metrics_b if k not in metrics_a]
    metrics = [
        MetricDelta(n, a, b, _delta(a, b))
        for n, a, b in ((n, metrics_a.get(n), metrics_b.get(n)) for n in names)
    ]
    by_a = _most_severe(diagnosis_a or diagnose(run_a, thresholds))
    by_b = _most_severe(diagnosis_b or diagnose(run_b, thresholds))
    rows = []
    for rule_id in list(by_b) + [i for i in by_a if i not in by_b]:
        a, b = by_a.get(rule_id), by_b.get(rule_id)
        change: Change = "both" if a and b else ("new" if b else "resolved")
        rows.append(
            FindingChange(
                rule_id,
                change,
                a.severity if a else None,
                b.severity if b else None,
                (b or a).title,
            )
        )
    rows.sort(key=lambda r: (CHANGE_ORDER[r.change], SEVERITY_RANK[r.severity_b or r.severity_a]))
    return Comparison(run_a.id, run_b.id, metrics, rows)


def render_table(comparison: Comparison, plot: str | None, console: Console) -> None:
    table = Table(title=f"A = {comparison.run_a}\nB = {comparison.run_b}", title_justify="left")
    for column in ("metric", "A", "B", "B − A"):
        table.add_column(column, overflow="fold")
    for row in comparison.metrics:
        table.add_row(row.metric, fmt(row.a), fmt(row.b), fmt(row.delta))
    console.print(table)
    if comparison.findings:
        findings = Table(title="Findings (A → B)", title_justify="left")
        for column in ("change", "id", "A", "B", "title"):
            findings.add_column(column, overflow="fold")
        styles = {"new": "bold red", "resolved": "green", "both": "yellow"}
        for row in comparison.findings:
            findings.add_row(
                Text(row.change, style=styles[row.change]),
                row.id,
                fmt(row.severity_a),
                fmt(row.severity_b),
                row.title,
            )
        console.print(findings)
    else:
        console.print(Text("No findings in either run.", style="green"))
    if plot:
        console.print(f"overlay plot: {plot}")


def write_overlay(run_a: Run, run_b: Run, path: str | os.PathLike) -> Path:
    from riswb.diagnose.plots import plot_overlay  # matplotlib only when a plot is asked for

    return plot_overlay([run_a, run_b], path)


def overlay_bytes(run_a: Run, run_b: Run) -> bytes:
    """The overlay of `write_overlay` as PNG bytes (for the HTML page; no file left behind)."""
    from riswb.diagnose.plots import overlay_png

    return overlay_png([run_a, run_b])
