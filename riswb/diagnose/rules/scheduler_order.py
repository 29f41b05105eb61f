"""scheduler-order: scheduler.step() called before optimizer.step().

Reads `scheduler_order` events (`scheduler_step` before the first optimizer step) and kind
`cadence` (cumulative `scheduler_step` vs `optimizer_step`, or `step_attempts` when larger:
a scheduler that ran before any optimizer step attempt, or more often than the attempts).
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, events, frame_of, span, steps_of

ID = "scheduler-order"

FIX = (
    "Call scheduler.step() after optimizer.step(): stepped first, the scheduler skips the "
    "first value of the schedule (PyTorch warns 'Detected call of lr_scheduler.step() before "
    "optimizer.step()' — do not silence it by poking _step_count). With GradScaler, step the "
    "scheduler only when the optimizer really stepped."
)


def check(run, th: Thresholds) -> list[Finding]:
    order = events(run, "scheduler_order")
    cadence = frame_of(run, "cadence")
    sched, opt = col(cadence, "scheduler_step"), col(cadence, "optimizer_step")
    # an attempt the GradScaler skipped still counts: the standard AMP recipe steps the
    # scheduler after every scaler.step()
    attempts = col(cadence, "step_attempts")
    opt = np.where(np.isfinite(attempts), np.fmax(attempts, opt), opt)
    ok = np.isfinite(sched) & np.isfinite(opt)
    if not order and not ok.any():
        raise Unchecked("no `scheduler_order` events and no cadence scheduler/optimizer counts")
    findings: list[Finding] = []
    steps = steps_of(cadence)
    early = ok & (opt == 0) & (sched > 0)
    if order or early.any():
        evidence: dict = {}
        if order:
            evidence["events"] = len(order)
            evidence["first_step"] = int(order[0].get("step", 0))
            evidence["scheduler_steps_before_first_optimizer_step"] = order[0].get(
                "scheduler_step")
        if early.any():
            evidence["cadence_steps"] = span(steps[early])
            evidence.setdefault("first_step", int(steps[early][0]))
        findings.append(Finding(
            ID, "warning", "scheduler.step() ran before the first optimizer.step()",
            evidence, FIX))
    if ok.any():
        i = np.flatnonzero(ok)[-1]
        excess = float(sched[i] - opt[i])
        if excess > max(1.0, th.scheduler_excess_fraction * opt[i]):
            findings.append(Finding(
                ID, "warning",
                f"scheduler.step() ran {int(sched[i])} times but optimizer.step() only "
                f"{int(opt[i])} (attempts included)",
                {"scheduler_steps": int(sched[i]), "optimizer_steps": int(opt[i]),
                 "excess": int(excess), "steps": span(steps[ok])},
                "The schedule advances without optimizer steps: the scheduler is stepped "
                "when a gate skipped the optimizer step, or per batch "
                "while the optimizer steps per epoch (step-cadence). " + FIX))
    return findings
