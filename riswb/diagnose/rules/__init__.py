"""Diagnosis rules (docs/design.md §5): one module per finding id, each a pure function of a run.

```python
from riswb.diagnose.rules import diagnose, Thresholds
diagnosis = diagnose(read_run(path), Thresholds().overrides(dominance_ratio=50))
diagnosis.findings    # one per id, ranked: error > warning > info, then IMPACT_ORDER
diagnosis.unchecked   # {id: reason} for rules the run gave no data to check
diagnosis.to_dict()
```

A rule is `check(run, thresholds) -> list[Finding]`; it raises `Unchecked(reason)` when the
run lacks the records it needs (a foreign loop, a probe that was off): the report then says
what could not be checked instead of guessing. Rules read only what docs/internals.md §3
lists and are vectorized (no per-record Python loops), so a 100k-step run diagnoses in
well under a second.

Ranking. Severity first. Within a severity, IMPACT_ORDER puts causes before symptoms: a
NaN loss or a broken step cadence explains a frozen loss, so they come first and
`loss-not-dropping` (the symptom every other finding can produce) comes last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from riswb.diagnose.rules import (
    clip_saturated,
    dead_loss_term,
    dead_params,
    grad_into_inputs,
    grads_altered,
    grads_not_cleared,
    loss_not_dropping,
    lr_stalled,
    nonfinite_grads,
    nonfinite_loss,
    optimizer_coverage,
    params_not_moving,
    scheduler_order,
    spectrum_mismatch,
    stale_checkpoint,
    step_cadence,
    step_skipped,
    term_conflict,
    term_dominates,
    train_mode,
    weights_swapped,
)
from riswb.diagnose.rules._base import SEVERITIES, SEVERITY_RANK, Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, disabled_probes, probe_name
from riswb.errors import RiswbError
from riswb.jsonsafe import strict_json
from riswb.runlog import Run

__all__ = [
    "Finding",
    "Thresholds",
    "SEVERITIES",
    "SEVERITY_RANK",
    "Unchecked",
    "Diagnosis",
    "RULES",
    "IMPACT_ORDER",
    "RULE_PROBES",
    "diagnose",
]

Rule = Callable[[Run, Thresholds], list[Finding]]

# id -> rule, in docs/design.md §5 table order, then the ids added since (docs/findings.md).
RULES: dict[str, Rule] = {
    module.ID: module.check
    for module in (
        params_not_moving,
        loss_not_dropping,
        nonfinite_loss,
        optimizer_coverage,
        dead_params,
        dead_loss_term,
        term_dominates,
        term_conflict,
        nonfinite_grads,
        step_skipped,
        step_cadence,
        weights_swapped,
        lr_stalled,
        scheduler_order,
        clip_saturated,
        grad_into_inputs,
        spectrum_mismatch,
        stale_checkpoint,
        grads_altered,
        grads_not_cleared,
        train_mode,
    )
}

# Within one severity: root causes that invalidate everything downstream first, then
# causes that stop part of the model learning, then quality issues, then symptoms.
IMPACT_ORDER: tuple[str, ...] = (
    "nonfinite-loss",       # nothing else is meaningful after a NaN loss
    "step-cadence",         # one update per epoch: every other number is off by 100×
    "grads-not-cleared",    # every update re-applies all earlier gradients
    "grads-altered",        # the optimizer applies other gradients than backward made
    "optimizer-coverage",   # parameters the optimizer never touches
    "lr-stalled",           # lr = 0: updates are zero whatever the gradients
    "step-skipped",         # updates dropped by a scaler or a gate
    "weights-swapped",      # training continues from the wrong weights
    "nonfinite-grads",      # NaN/Inf gradients (often sanitized into zeros)
    "dead-loss-term",       # a term (or its weight) contributes nothing
    "dead-params",          # modules that receive no gradient
    "train-mode",           # BatchNorm/Dropout in the wrong mode
    "grad-into-inputs",     # gradient into data, graphs kept alive
    "params-not-moving",    # symptom of the above when they are not observed
    "scheduler-order",
    "clip-saturated",
    "term-dominates",
    "term-conflict",
    "spectrum-mismatch",
    "stale-checkpoint",
    "loss-not-dropping",    # the symptom: explained by any finding above it
)
assert set(IMPACT_ORDER) == set(RULES), "IMPACT_ORDER must rank every rule exactly once"

# The built-in probes (riswb.probes.BUILTIN module names) whose records each rule reads: when
# one of them was disabled by an error, an unchecked rule says so (the real reason the data
# is missing).
RULE_PROBES: dict[str, tuple[str, ...]] = {
    "params-not-moving": ("param_update",),
    "loss-not-dropping": ("loss_terms",),
    "nonfinite-loss": ("loss_terms", "nonfinite"),
    "optimizer-coverage": ("coverage",),
    "dead-params": ("dead_params", "grad_norms"),
    "dead-loss-term": ("loss_terms", "term_gradients"),
    "term-dominates": ("term_gradients",),
    "term-conflict": ("term_gradients",),
    "nonfinite-grads": ("nonfinite", "term_gradients"),
    "step-skipped": ("param_update",),
    "step-cadence": ("cadence",),
    "weights-swapped": ("weight_swap",),
    "lr-stalled": ("lr_trace",),
    "scheduler-order": ("lr_trace", "cadence"),
    "clip-saturated": ("clip",),
    "grad-into-inputs": ("inputs",),
    "spectrum-mismatch": ("spectra",),
    "stale-checkpoint": (),
    "grads-altered": ("grad_step",),
    "grads-not-cleared": ("cadence",),
    "train-mode": ("mode", "cadence"),
}

_IMPACT_RANK = {rule_id: rank for rank, rule_id in enumerate(IMPACT_ORDER)}


@dataclass
class Diagnosis:
    """The outcome of `diagnose`: ranked findings, and what could not be checked."""

    findings: list[Finding]
    unchecked: dict[str, str]
    checked: list[str]
    thresholds: Thresholds
    run_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = {sev: sum(f.severity == sev for f in self.findings) for sev in SEVERITIES}

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        """No error finding (warnings and info allowed)."""
        return not self.errors

    def by_id(self, rule_id: str) -> list[Finding]:
        return [f for f in self.findings if f.id == rule_id]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "ok": self.ok,
            "counts": dict(self.counts),
            "findings": [f.to_dict() for f in self.findings],
            "unchecked": dict(self.unchecked),
            "checked": list(self.checked),
            "thresholds": strict_json(self.thresholds.to_dict(), digits=6),
        }


def merge(findings: list[Finding]) -> list[Finding]:
    """One finding per id: the most severe of a rule's findings (the first of equals) leads,
    its title extended by the others' and their severity, title, evidence and fix kept under
    `evidence["also"]`, their distinct fixes appended — a report reads one entry per id."""
    by_id: dict[str, list[Finding]] = {}
    for finding in findings:
        by_id.setdefault(finding.id, []).append(finding)
    out = []
    for group in by_id.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        group = sorted(group, key=lambda f: SEVERITY_RANK[f.severity])  # stable
        lead, rest = group[0], group[1:]
        fixes = [lead.fix] + [f.fix for f in rest if f.fix and f.fix != lead.fix]
        out.append(Finding(
            lead.id, lead.severity, "; ".join([lead.title, *(f.title for f in rest)]),
            {**lead.evidence, "also": [{"severity": f.severity, "title": f.title,
                                        "evidence": f.evidence} for f in rest]},
            " ".join(dict.fromkeys(fixes))))
    return out


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Severity (error > warning > info), then IMPACT_ORDER, then the order rules gave."""
    indexed = list(enumerate(findings))
    indexed.sort(
        key=lambda item: (
            SEVERITY_RANK[item[1].severity],
            _IMPACT_RANK.get(item[1].id, len(_IMPACT_RANK)),
            item[0],
        )
    )
    return [finding for _, finding in indexed]


def diagnose(
    run: Run,
    thresholds: Thresholds | dict[str, Any] | None = None,
    *,
    rules: Iterable[str] | None = None,
    strict: bool = False,
) -> Diagnosis:
    """Run every rule (or the ids in `rules`) over a loaded run.

    A rule that raises anything but Unchecked is reported in `unchecked` as
    "rule failed: ..." so that one malformed record cannot take the report down;
    `strict=True` re-raises instead (tests, rule development).
    """
    if thresholds is None:
        thresholds = Thresholds()
    elif isinstance(thresholds, dict):
        thresholds = Thresholds.from_dict(thresholds)
    selected = list(RULES) if rules is None else list(rules)
    unknown = [rule_id for rule_id in selected if rule_id not in RULES]
    if unknown:
        raise RiswbError(f"unknown rule id(s) {', '.join(unknown)}; known: {', '.join(RULES)}")
    findings: list[Finding] = []
    unchecked: dict[str, str] = {}
    checked: list[str] = []
    for rule_id in selected:
        try:
            produced = RULES[rule_id](run, thresholds)
        except Unchecked as reason:
            unchecked[rule_id] = reason.reason
            continue
        except Exception as error:  # noqa: BLE001 - isolate one rule's failure
            if strict:
                raise
            unchecked[rule_id] = f"rule failed: {type(error).__name__}: {error}"
            continue
        checked.append(rule_id)
        findings.extend(merge(produced))
    disabled = disabled_probes(run) if unchecked else {}
    for rule_id in unchecked:
        names = [probe_name(module) for module in RULE_PROBES[rule_id]]
        failed = [f"{name} ({disabled[name]})" for name in names if name in disabled]
        if failed:
            unchecked[rule_id] += f"; probe disabled by an error: {', '.join(failed)}"
    return Diagnosis(rank(findings), unchecked, checked, thresholds, run_id=run.id)
