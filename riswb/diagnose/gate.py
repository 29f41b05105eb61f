"""The gate: a pass/fail verdict on a run for CI (docs/design.md §5, §6).

A run passes when its parameters move, its loss drops, and the diagnosis has no error
finding. `gate(run)` returns a `GateResult` (passed, one-line reasons, the list of checks);
`junit_xml(result)` renders it as JUnit XML (one testcase per check, per finding, and per
unchecked rule, skipped) for CI dashboards.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules import RULES, Diagnosis, Finding, Thresholds, diagnose
from riswb.diagnose.rules._util import alternating_objectives
from riswb.diagnose.text import fmt, fmt_evidence
from riswb.errors import RiswbError
from riswb.runlog import Run


@dataclass
class Check:
    name: str
    passed: bool
    value: float | None  # the measured fraction; None when the run cannot tell
    threshold: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GateResult:
    run_id: str
    passed: bool
    reasons: list[str]
    checks: list[Check]
    diagnosis: Diagnosis

    @property
    def findings(self) -> list[Finding]:
        return self.diagnosis.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
            "findings": [f.to_dict() for f in self.findings],
            "unchecked": dict(self.diagnosis.unchecked),
        }


def _window_median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def check_loss_drops(run: Run, min_loss_drop: float) -> Check:
    """The total loss (median of the last tenth of records) fell by ≥ min_loss_drop
    relative to the median of the first tenth; not judged (passed, said so) when the loss
    calls alternate between objectives, as in a GAN, unless the last loss is non-finite."""
    name = "loss-drops"
    loss = run.kind("loss")
    if "total" not in loss or len(loss) < 2:
        return Check(name, False, None, min_loss_drop, "no loss records: cannot tell")
    values = col(loss, "total")
    if not math.isfinite(values[-1]):
        return Check(
            name,
            False,
            float(values[-1]),
            min_loss_drop,
            f"the total loss is {fmt(float(values[-1]))} at step {int(loss['step'].iloc[-1])}",
        )
    objectives = alternating_objectives(loss, np.isfinite(values))
    if objectives:  # as loss-not-dropping says: the sum of adversaries need not fall
        return Check(name, True, None, min_loss_drop,
                     f"not judged: the loss alternates between {len(objectives)} objectives "
                     f"({'; '.join(objectives[:3])}), whose sum need not fall")
    window = max(1, len(values) // 10)
    start, end = _window_median(values[:window]), _window_median(values[-window:])
    if start is None or end is None or start == 0:
        return Check(name, False, None, min_loss_drop, "the loss has no finite start value")
    drop = (start - end) / abs(start)
    passed = drop >= min_loss_drop
    detail = (
        f"total loss {fmt(start)} → {fmt(end)} ({drop * 100:+.1f}% drop; "
        f"needs ≥ {min_loss_drop * 100:.1f}%)"
    )
    return Check(name, passed, drop, min_loss_drop, detail)


def check_params_move(run: Run, min_moving: float, min_update_ratio: float) -> Check:
    """Parameters moved (‖Δθ‖/‖θ‖ > min_update_ratio) on at least `min_moving` of the logged
    optimizer steps."""
    name = "params-move"
    update = run.kind("param_update")
    if not len(update) or "ratio" not in update:
        return Check(name, False, None, min_moving, "no param_update records: cannot tell")
    ratio = col(update, "ratio")
    moving = float((np.nan_to_num(ratio, nan=0.0) > min_update_ratio).mean())
    passed = moving >= min_moving
    detail = (
        f"params moved on {moving * 100:.1f}% of {len(ratio)} logged optimizer steps "
        f"(needs ≥ {min_moving * 100:.1f}%)"
    )
    return Check(name, passed, moving, min_moving, detail)


def gate(
    run: Run, thresholds: Thresholds | None = None, diagnosis: Diagnosis | None = None
) -> GateResult:
    """Pass when params move, the loss drops, and no finding has severity "error".

    The two checks compare against the thresholds the rules use: `min_moving_fraction`
    (of steps with ‖Δθ‖/‖θ‖ above `min_update_ratio`) and `min_loss_drop`.
    """
    th = thresholds or Thresholds()
    diagnosis = diagnosis or diagnose(run, th)
    checks = [
        check_params_move(run, th.min_moving_fraction, th.min_update_ratio),
        check_loss_drops(run, th.min_loss_drop),
    ]
    errors = diagnosis.errors
    checks.append(
        Check(
            "no-error-findings",
            not errors,
            len(errors),
            0,
            "no error finding"
            if not errors
            else "error findings: " + ", ".join(f.id for f in errors),
        )
    )
    reasons = [f"{c.name}: {c.detail}" for c in checks[:2] if not c.passed]
    reasons += [f"{f.id}: {f.title}" for f in errors]
    return GateResult(run.id, not reasons, reasons, checks, diagnosis)


def junit_xml(result: GateResult) -> str:
    """JUnit XML: a testcase per gate check, per finding, per unchecked rule (skipped),
    and per rule that ran and found nothing; error findings and failed checks fail."""
    cases: list[ET.Element] = []
    failures = skipped = 0

    def case(classname: str, name: str) -> ET.Element:
        element = ET.Element("testcase", classname=classname, name=name, time="0")
        cases.append(element)
        return element

    for check in result.checks:
        element = case("riswb.diagnose.gate", check.name)
        if not check.passed:
            failures += 1
            ET.SubElement(
                element, "failure", message=check.detail, type="gate"
            ).text = f"value={fmt(check.value)} threshold={fmt(check.threshold)}"
        else:
            ET.SubElement(element, "system-out").text = check.detail
    seen = set()
    for finding in result.findings:
        seen.add(finding.id)
        element = case(f"riswb.findings.{finding.severity}", finding.id)
        body = f"evidence: {fmt_evidence(finding.evidence, limit=50)}\nfix: {finding.fix}"
        if finding.severity == "error":
            failures += 1
            ET.SubElement(element, "failure", message=finding.title, type="error").text = body
        else:
            ET.SubElement(element, "system-out").text = f"{finding.title}\n{body}"
    for rule_id, reason in result.diagnosis.unchecked.items():
        seen.add(rule_id)
        element = case("riswb.findings.unchecked", rule_id)
        skipped += 1
        ET.SubElement(element, "skipped", message=reason)
    for rule_id in RULES:
        if rule_id not in seen:
            case("riswb.findings.clean", rule_id)

    suite = ET.Element(
        "testsuite",
        name=f"riswb.diagnose.gate.{result.run_id}",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time="0",
    )
    suite.extend(cases)
    root = ET.Element(
        "testsuites",
        name="riswb",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def write_junit(result: GateResult, path: str | Path) -> Path:
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(junit_xml(result) + "\n", encoding="utf-8")
    except OSError as error:
        raise RiswbError(f"cannot write JUnit file {out}: {error}") from None
    return out
