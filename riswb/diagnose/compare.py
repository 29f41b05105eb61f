"""Two runs side by side: metrics, findings diff (new/resolved/both), an overlay plot.

Run A is the baseline and run B the candidate: a finding "new" is in B only, "resolved"
in A only, "both" in each (with the severities of both).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from riswb.diagnose.report import (
    SEVERITY_RANK,
    diagnosis_parts,
    fmt,
    run_diagnosis,
    strict_json,
    summarize,
)
from riswb.runlog import Run


@dataclass
class Comparison:
    run_a: str
    run_b: str
    metrics: list[dict]  # {"metric", "a", "b", "delta"}
    findings: list[dict]  # {"id", "change", "severity_a", "severity_b", "title"}

    def to_dict(self) -> dict:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "metrics": self.metrics,
            "findings": self.findings,
        }


def _last(frame: pd.DataFrame, column: str) -> float | None:
    """The last value as logged (a NaN at the end is the run's result, not a gap)."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    return float(values[-1]) if values.size else None


def _metrics(run: Run) -> dict[str, Any]:
    summary = summarize(run)
    out: dict[str, Any] = {
        "status": summary["status"],
        "steps": summary["steps"],
        "opt_steps": summary["opt_steps"],
        "duration_s": summary["duration_s"],
        "best loss/total": summary["best_loss"],
    }
    loss = run.kind("loss")
    for column in [c for c in loss.columns if c != "step"]:
        out[f"final loss/{column}"] = _last(loss, column)
    evals = run.kind("eval")
    for column in [c for c in evals.columns if c != "step"]:
        out[f"final eval/{column}"] = _last(evals, column)
    return out


def _delta(a: Any, b: Any) -> Any:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return b - a
    return None


def compare(
    run_a: Run, run_b: Run, diagnosis_a: Any = None, diagnosis_b: Any = None, thresholds: Any = None
) -> Comparison:
    metrics_a, metrics_b = _metrics(run_a), _metrics(run_b)
    names = list(metrics_a) + [k for k in metrics_b if k not in metrics_a]
    metrics = [
        {
            "metric": n,
            "a": metrics_a.get(n),
            "b": metrics_b.get(n),
            "delta": _delta(metrics_a.get(n), metrics_b.get(n)),
        }
        for n in names
    ]
    findings_a, _ = diagnosis_parts(
        diagnosis_a if diagnosis_a is not None else run_diagnosis(run_a, thresholds)
    )
    findings_b, _ = diagnosis_parts(
        diagnosis_b if diagnosis_b is not None else run_diagnosis(run_b, thresholds)
    )
    by_a: dict[str, dict] = {}
    by_b: dict[str, dict] = {}
    for findings, by_id in ((findings_a, by_a), (findings_b, by_b)):
        for finding in findings:  # ranked: the first of an id is its most severe
            by_id.setdefault(finding["id"], finding)
    rows = []
    for rule_id in list(by_b) + [i for i in by_a if i not in by_b]:
        a, b = by_a.get(rule_id), by_b.get(rule_id)
        change = "both" if a and b else ("new" if b else "resolved")
        rows.append(
            {
                "id": rule_id,
                "change": change,
                "severity_a": a["severity"] if a else None,
                "severity_b": b["severity"] if b else None,
                "title": (b or a)["title"],
            }
        )
    order = {"new": 0, "both": 1, "resolved": 2}

    def key(row: dict) -> tuple:
        severity = row["severity_b"] or row["severity_a"]
        return order[row["change"]], SEVERITY_RANK.get(severity, 3)

    rows.sort(key=key)
    return Comparison(run_a.id, run_b.id, metrics, rows)


def render_json(comparison: Comparison, plot: str | None = None) -> str:
    data = comparison.to_dict()
    data["plot"] = plot
    return json.dumps(strict_json(data), indent=2, allow_nan=False)


def render_table(comparison: Comparison, plot: str | None = None, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    table = Table(title=f"A = {comparison.run_a}\nB = {comparison.run_b}", title_justify="left")
    for column in ("metric", "A", "B", "B − A"):
        table.add_column(column, overflow="fold")
    for row in comparison.metrics:
        table.add_row(row["metric"], fmt(row["a"]), fmt(row["b"]), fmt(row["delta"]))
    console.print(table)
    if comparison.findings:
        findings = Table(title="Findings (A → B)", title_justify="left")
        for column in ("change", "id", "A", "B", "title"):
            findings.add_column(column, overflow="fold")
        styles = {"new": "bold red", "resolved": "green", "both": "yellow"}
        for row in comparison.findings:
            findings.add_row(
                Text(row["change"], style=styles[row["change"]]),
                row["id"],
                fmt(row["severity_a"]),
                fmt(row["severity_b"]),
                row["title"],
            )
        console.print(findings)
    else:
        console.print(Text("No findings in either run.", style="green"))
    if plot:
        console.print(f"overlay plot: {plot}")


def write_overlay(run_a: Run, run_b: Run, path: str | os.PathLike) -> Path:
    from riswb.diagnose.plots import plot_overlay

    return plot_overlay([run_a, run_b], path)
