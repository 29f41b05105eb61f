"""The report: what a run says about itself, ranked findings first, evidence tables after.

`build_report(run)` turns a loaded `Run` (riswb.runlog) into a `Report`: a `Summary` (id,
status, steps, optimizer steps, duration, final and best losses, reader/manifest
warnings), the `Diagnosis` of `riswb.diagnose.rules.diagnose` (ranked findings, unchecked
rules) and the evidence tables of `riswb.diagnose.tables`. The renderers read this model:
`riswb.diagnose.render` (rich table, markdown), `riswb.diagnose.render_html` (one
self-contained page) and `Report.to_dict()` through `riswb.jsonsafe.dumps` (strict JSON);
the text they share (`Summary.pairs`, `Report.headline`) lives here so they cannot drift.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from riswb.diagnose.frames import col, value_columns
from riswb.diagnose.rules import Diagnosis, Finding, Thresholds, diagnose
from riswb.diagnose.tables import Table, build_tables, last_finite
from riswb.diagnose.text import fmt, fmt_duration
from riswb.runlog import Run


@dataclass(frozen=True)
class Summary:
    """Run-level facts; `to_dict` is the report JSON's `summary`."""

    id: str
    path: str
    status: str
    name: str | None
    seed: int | None
    started_at: str | None
    ended_at: str | None
    steps: int | None
    opt_steps: int | None
    duration_s: float | None
    final_loss: float | None
    best_loss: float | None
    best_step: int | None
    nonfinite_loss: bool
    final_terms: dict[str, float | None]
    git_sha: str | None
    versions: dict[str, str]
    warnings: list[str]
    # the sampled probes' final stride (riswb.instrument.observation): > 1 on a host-bound
    # loop, whose gradient statistics then come from one optimizer-step cycle in that many
    observe_stride: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def pairs(self) -> list[tuple[str, str]]:
        """(label, text) rows every human-facing renderer shows, in this order."""
        pairs = [
            ("run", self.id),
            ("status", self.status),
            ("steps", fmt(self.steps)),
            ("optimizer steps", fmt(self.opt_steps)),
            ("duration", fmt_duration(self.duration_s)),
            ("final loss", fmt(self.final_loss)),
        ]
        if self.best_loss is not None:
            pairs.append(("best loss", f"{fmt(self.best_loss)} at step {self.best_step}"))
        if self.final_terms:
            terms = self.final_terms.items()
            pairs.append(("final terms", ", ".join(f"{k}={fmt(v)}" for k, v in terms)))
        if self.observe_stride > 1:
            pairs.append(("observed", f"1 optimizer step in {self.observe_stride} for gradient "
                          "norms, dead tensors, grad_step and inputs (a host-bound loop)"))
        return pairs


@dataclass
class Report:
    path: str
    summary: Summary
    diagnosis: Diagnosis
    tables: list[Table]
    absent: dict[str, str] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    plots_skipped: dict[str, str] = field(default_factory=dict)

    @property
    def findings(self) -> list[Finding]:
        return self.diagnosis.findings

    def headline(self) -> str:
        counts = self.diagnosis.counts
        return f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info"

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.summary.id,
            "path": self.path,
            "summary": self.summary.to_dict(),
            "counts": dict(self.diagnosis.counts),
            "findings": [f.to_dict() for f in self.findings],
            "unchecked": dict(self.diagnosis.unchecked),
            "tables": {t.name: t.to_dict() for t in self.tables},
            "absent": self.absent,
            "plots": self.plots,
            "plots_skipped": self.plots_skipped,
        }


def _last_count(frame, column: str) -> float | None:
    return float(col(frame, column)[-1]) if column in frame and len(frame) else None


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _ended(run: Run) -> float | None:
    """The manifest's end time, else the latest event's, else when scalars were last written."""
    ended = _parse_time(run.manifest.get("ended_at"))
    if ended is None:
        times = [r["time"] for r in run.event_records if isinstance(r.get("time"), float)]
        ended = max(times) if times else None
    if ended is None:
        scalars = run.path / "scalars.jsonl"
        ended = scalars.stat().st_mtime if scalars.exists() else None
    return ended


def summarize(run: Run) -> Summary:
    """Run-level facts: id, status, steps, opt steps, duration, final/best loss, warnings."""
    manifest = run.manifest
    loss = run.kind("loss")
    update = run.kind("param_update")

    steps = _last_count(run.kind("cadence"), "loss")
    if steps is None and len(loss):
        steps = float(loss["step"].max()) + 1
    opt_steps = _last_count(run.kind("cadence"), "optimizer_step")
    if opt_steps is None and "opt_step" in update and len(update):
        opt_steps = float(col(update, "opt_step").max())

    started, ended = _parse_time(manifest.get("started_at")), _ended(run)
    duration = ended - started if started is not None and ended is not None else None

    final_loss = best_loss = best_step = None
    final_terms: dict[str, float | None] = {}
    nonfinite_total = False
    if "total" in loss and len(loss):
        total = col(loss, "total")
        finite = np.isfinite(total)
        final_loss = float(total[-1])
        nonfinite_total = bool((~finite).any())
        if finite.any():
            index = int(np.nanargmin(np.where(finite, total, np.nan)))
            best_loss, best_step = float(total[index]), int(loss["step"].iloc[index])
        final_terms = {t: last_finite(col(loss, t)) for t in value_columns(loss, exclude={"total"})}

    strides = run.events_of("observation_stride")
    warnings = list(run.warnings)
    for message in map(str, manifest.get("warnings") or []):
        if message not in warnings:
            warnings.append(message)

    return Summary(
        id=run.id,
        path=str(run.path),
        status=run.status,
        name=(manifest.get("config") or {}).get("name") or manifest.get("name"),
        seed=manifest.get("seed"),
        started_at=manifest.get("started_at"),
        ended_at=manifest.get("ended_at"),
        steps=int(steps) if steps is not None else None,
        opt_steps=int(opt_steps) if opt_steps is not None else None,
        duration_s=round(duration, 3) if duration is not None else None,
        final_loss=final_loss,
        best_loss=best_loss,
        best_step=best_step,
        nonfinite_loss=nonfinite_total,
        final_terms=final_terms,
        git_sha=manifest.get("git_sha"),
        versions=manifest.get("versions") or {},
        warnings=warnings,
        observe_stride=int(strides[-1]["stride"]) if strides else 1,
    )


def build_report(
    run: Run, thresholds: Thresholds | None = None, diagnosis: Diagnosis | None = None
) -> Report:
    """The report model of a run: summary, ranked findings, unchecked rules, tables."""
    thresholds = thresholds or Thresholds()
    tables, absent = build_tables(run, thresholds)
    return Report(
        path=str(run.path),
        summary=summarize(run),
        diagnosis=diagnosis or diagnose(run, thresholds),
        tables=tables,
        absent=absent,
    )
