"""step-skipped: optimizer steps skipped (scaler overflow, a step gate) or silently empty.

Reads `step_skipped` events (`reason`: scaler|gate|nonfinite, `count`), kind `cadence`
(loss calls → intended steps), kind `param_update` (`frac_moving`, `ratio`: a step that
ran but changed nothing — unless its `grad_norm` was 0: nothing to apply, as when a hinge or
margin loss is satisfied by the whole batch) and kind `lr` (zero-lr steps are lr-stalled,
not skips).

An optimizer stepped with a closure (LBFGS; `closure_steps` in `cadence`) runs its own
termination tests (gradient or loss change below its tolerance) and then returns without
moving: once the loss has converged, such empty steps are the optimizer finishing, not a
skip. They are excused when every step of the run got a closure and the loss never fell
again after the empty step (kind `loss`, `total`); empty closure steps followed by further
progress are still reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    converged_closure_steps,
    events,
    frame_of,
    intent_accumulation,
    scaler_calibration,
    span,
    step_ranges,
    steps_of,
    zero_gradient_updates,
)
from riswb.diagnose.text import pct

ID = "step-skipped"

FIXES = {
    "scaler": (
        "GradScaler skipped these steps on inf/NaN gradients. A few at the start calibrate "
        "the scale; many mean real overflow in float16: find it (nonfinite-grads), compute "
        "the overflowing losses and decompositions in float32 (autocast(enabled=False)), and "
        "never sanitize gradients before scaler.step() (it hides the overflow)."),
    "gate": (
        "A step gate skipped these steps. Gates like 'only step when backbone and head "
        "gradient norms are both > 0' skip valid steps; remove the gate or gate only on "
        "non-finite gradients, and log why it fires."),
    "nonfinite": (
        "Steps were skipped because gradients were non-finite: see nonfinite-grads for the "
        "term that produces them, and fix it instead of skipping."),
}


def _severity(fraction: float, th: Thresholds, reason: str) -> str:
    """`fraction`: skips per intended step, less the scaler's calibration skips."""
    if reason == "scaler" and fraction <= th.max_scaler_skip_fraction:
        return "info"
    return "error" if fraction >= th.max_skip_fraction else "warning"


def check(run, th: Thresholds) -> list[Finding]:
    skipped = events(run, "step_skipped")
    updates = frame_of(run, "param_update")
    if not skipped and updates.empty:
        raise Unchecked("no `step_skipped` events and no `param_update` records")
    cadence = frame_of(run, "cadence")
    accumulation, _ = intent_accumulation(run)
    intended = None
    if "loss" in cadence.columns:
        calls = col(cadence, "loss")
        if np.isfinite(calls).any():
            intended = float(np.nanmax(calls)) / accumulation
    findings: list[Finding] = []

    by_reason: dict[str, dict] = {}
    for event in skipped:
        reason = str(event.get("reason") or "unknown")
        entry = by_reason.setdefault(reason, {"count": 0, "events": 0, "steps": []})
        count = event.get("count", 1)
        entry["count"] += int(count) if isinstance(count, (int, float)) and count > 0 else 1
        entry["events"] += 1
        entry["steps"].append(int(event.get("step", 0)))
    calibration = scaler_calibration(run, th)
    for reason, entry in by_reason.items():
        total = intended if intended else max(1.0, float(len(updates)) + entry["count"])
        fraction = entry["count"] / total
        # a GradScaler that starts too high skips a few steps, then recovers: calibration
        excused = min(entry["count"], calibration) if reason == "scaler" else 0
        steps = np.array(entry["steps"])
        findings.append(Finding(
            ID, _severity((entry["count"] - excused) / total, th, reason),
            f"{entry['count']} optimizer steps skipped ({reason}), {pct(fraction)} of "
            f"{int(total)} intended" + (f"; {excused} of them scale calibration"
                                        if excused else ""),
            {"reason": reason, "skipped": entry["count"], "events": entry["events"],
             "fraction_of_intended": fraction, "intended_steps": int(total),
             "calibration_skips": excused,
             "steps": span(steps), "first_steps": sorted(entry["steps"])[:10]},
            FIXES.get(reason, FIXES["gate"])))

    # Steps that ran but changed nothing (a gate inside the step, zeroed gradients).
    if not updates.empty and ("frac_moving" in updates.columns or "ratio" in updates.columns):
        ustep = steps_of(updates)
        frac, ratio = col(updates, "frac_moving"), col(updates, "ratio")
        valid = np.isfinite(frac) | np.isfinite(ratio)
        empty = valid & ((frac <= 0) | (ratio <= th.min_update_ratio))
        lr = frame_of(run, "lr")
        lr_cols = [c for c in lr.columns if c.startswith("group/")]
        if lr_cols and empty.any():
            # the lr in force at each update: the last lr record at or before that step
            lr_max = pd.DataFrame({"step": steps_of(lr),
                                   "lr": lr[lr_cols].apply(pd.to_numeric, errors="coerce")
                                   .max(axis=1).to_numpy()}).dropna()
            if len(lr_max):
                merged = pd.merge_asof(pd.DataFrame({"step": ustep}), lr_max, on="step",
                                       direction="backward")
                lr_now = merged["lr"].to_numpy(dtype=float)
                empty &= ~(np.isfinite(lr_now) & (lr_now <= th.lr_min))
        converged = converged_closure_steps(run, ustep, empty)
        empty &= ~converged & ~zero_gradient_updates(updates)
        n_valid = int(valid.sum())
        n_empty = int(empty.sum())
        # When (almost) no step moves, params-not-moving owns the finding; a skip pattern is
        # empty steps between moving ones (a gate, docs/failures.md #5).
        moving_enough = n_valid and 1 - n_empty / n_valid >= th.min_moving_fraction
        if n_valid and n_empty and moving_enough:
            fraction = n_empty / n_valid
            findings.append(Finding(
                ID, "error" if fraction >= th.max_skip_fraction else "warning",
                f"optimizer.step() ran but changed no parameter on {n_empty} of {n_valid} "
                f"logged steps ({pct(fraction)}), with a non-zero lr",
                {"reason": "silent", "empty_updates": n_empty, "logged_updates": n_valid,
                 "fraction": fraction, "steps": span(ustep[valid]),
                 "empty_ranges": step_ranges(ustep, empty)},
                "The step was called but did nothing: all gradients were zero or None at that "
                "moment (zero_grad() between backward and step, sanitization that zeroed "
                "them) or a gate inside the step skipped it — e.g. one that requires both "
                "backbone and head gradient norms > 0."))
    return findings

