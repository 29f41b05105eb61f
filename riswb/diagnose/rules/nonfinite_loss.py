"""nonfinite-loss: the loss was NaN/Inf (or finite but near overflow).

Reads kind `loss` (`total` and per-term values, to name the term that went first) and
kind `nonfinite` (`loss`: 1 when the total was non-finite).
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col, value_columns
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    frame_of,
    hint,
    matrix,
    n_ranges,
    span,
    step_ranges,
    steps_of,
)
from riswb.diagnose.text import fmt, pct

ID = "nonfinite-loss"


def check(run, th: Thresholds) -> list[Finding]:
    loss = frame_of(run, "loss")
    nonfinite = frame_of(run, "nonfinite")
    has_total = "total" in loss.columns
    has_flag = "loss" in nonfinite.columns
    if not has_total and not has_flag:
        raise Unchecked("no `loss` total and no `nonfinite` loss flag")
    findings: list[Finding] = []
    evidence: dict = {}
    bad_steps = np.empty(0, dtype=np.int64)
    if has_total:
        steps, total = steps_of(loss), col(loss, "total")
        bad = ~np.isfinite(total)  # every loss record carries `total` (internals §3)
        bad_steps = steps[bad]
        evidence.update({
            "steps": span(steps),
            "nonfinite_records": int(bad.sum()),
            "nonfinite_fraction": float(bad.sum() / max(1, len(bad))),
            "nonfinite_ranges": step_ranges(steps, bad),
            "n_ranges": n_ranges(bad),
        })
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            terms = value_columns(loss, exclude=("total",))
            values = matrix(loss, terms)
            if terms:
                term_bad = ~np.isfinite(values)
                counts = term_bad.sum(axis=0)
                evidence["terms"] = {t: int(c) for t, c in zip(terms, counts, strict=True) if c}
                at_first = zip(terms, term_bad[first], strict=True)
                evidence["terms_at_first"] = [t for t, b in at_first if b]
            before = total[:first][np.isfinite(total[:first])]
            if len(before):
                evidence["last_finite_total"] = float(before[-1])
                evidence["max_finite_total_before"] = float(np.max(np.abs(before)))
    if has_flag:
        flag = col(nonfinite, "loss")
        flagged = np.isfinite(flag) & (flag > 0)
        fsteps = steps_of(nonfinite)[flagged]
        evidence["flagged_records"] = int(flagged.sum())
        bad_steps = np.union1d(bad_steps, fsteps)
    if len(bad_steps):
        first_step = int(bad_steps.min())
        evidence["first_step"] = first_step
        named = evidence.get("terms_at_first") or []
        culprit = f", first in term(s) {', '.join(named)}" if named else ""
        title = (f"The loss was non-finite on {len(bad_steps)} logged steps "
                 f"(first at step {first_step}{culprit})")
        if "nonfinite_fraction" in evidence:
            title += f", {pct(evidence['nonfinite_fraction'])} of records"
        growing = evidence.get("max_finite_total_before", 0) > th.huge_loss
        fix = (
            "Find the first non-finite term and its inputs at that step. "
            + ("The loss was already huge before it overflowed: " if growing else "")
            + "Common causes: an input or target on the wrong scale (normalize it)"
            + hint(run, " — a covariance not trace-normalized, R_samp at ‖3e-4‖ against "
                   "R_blend at 3.5e12, gave a loss of 1.7e25 —")
            + ", log/sqrt/division of a value that reaches 0 (add an eps), a float16 loss "
            "under autocast (compute the loss in float32), or exploding updates (lower the "
            "lr, clip). Non-finite gradients usually follow: see nonfinite-grads."
        )
        findings.append(Finding(ID, "error", title, evidence, fix))
    elif has_total:
        total = col(loss, "total")
        finite = np.isfinite(total)
        if finite.any():
            peak = float(np.max(np.abs(total[finite])))
            if peak > th.huge_loss:
                at = int(steps_of(loss)[finite][np.argmax(np.abs(total[finite]))])
                findings.append(Finding(
                    ID, "warning",
                    f"The loss reached {fmt(peak)} (step {at}): near float overflow",
                    {"max_abs_total": peak, "at_step": at, "huge_loss": th.huge_loss,
                     "steps": span(steps_of(loss))},
                    "A loss this large is a scale bug, not a hard example: an input or "
                    "target on the wrong scale."
                    + hint(run, " Here R_samp was not trace-normalized (‖R_samp‖ = 3e-4 "
                           "against ‖R_blend‖ = 3.5e12 gave 1.7e25): normalize every "
                           "covariance to trace N before it enters a loss (riswb litmus).")
                    + " Normalize inputs and targets and check that the loss at "
                    "initialization is O(1)."))
    return findings
