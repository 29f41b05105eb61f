"""step-cadence: optimizer steps per training batch far from what the run intends.

Reads kind `cadence` (cumulative `loss`, `backward`, `optimizer_step` or `step_attempts`
when larger, `scheduler_step`, `loss_without_backward`, `backward_accumulating`,
`grads_carried_steps`) and the manifest's `intent.accumulation` (optimizer steps expected
per that many loss calls). Without a declared intent, gradient accumulation is recognized
from the counts. ratio = optimizer_step × accumulation / loss: 1 is right; one step per
epoch gives ≪ 1 — whether the losses were summed and backpropagated once, or every batch's
backward ran after clearing the gradients so that only the last one was stepped. A declared
accumulation stepped at the right cadence is also checked for adding up: backwards that
started from cleared gradients (`backward_accumulating` short of backward − steps) mean
each step applied its last micro-batch alone.
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    hint,
    intent_accumulation,
    need,
    span,
    step_ranges,
    steps_of,
    totals,
)
from riswb.diagnose.text import fmt, pct

ID = "step-cadence"

FIX_LOW = (
    "optimizer.step() runs once every ~{every} training batches. Likely cause: "
    "loss.backward() and optimizer.step() sit one indentation level too low, after the "
    "batch loop — one update per epoch, on the last batch{story}. Move "
    "zero_grad/backward/step inside the batch loop. If you accumulate "
    "gradients on purpose, declare it: Workbench(..., accumulation=N) records the intent "
    "(manifest intent.accumulation)."
)
FIX_HIGH = (
    "optimizer.step() runs more often than once per {acc} batch(es): a second step() call "
    "(in a callback or closure as well as in the loop), or stepping without a new backward. "
    "Keep exactly one zero_grad/backward/step per (accumulated) batch."
)


COUNTS = ("loss", "backward", "optimizer_step", "loss_without_backward",
          "backward_accumulating", "grads_carried_steps", "same_batch_loss",
          "shared_backward_steps", "closure_steps", "same_batch_backward")


def _less(values: np.ndarray, cadence, name: str) -> np.ndarray:
    """`values` less the cumulative column `name` (absent in older runs: 0)."""
    if name not in cadence.columns:
        return values
    other = col(cadence, name)
    return values - np.where(np.isfinite(other), other, 0.0)


def _inferred_accumulation(counts: dict[str, float], th: Thresholds) -> int | None:
    """k when the loop accumulates k micro-batches per step: every loss is backpropagated,
    k backwards per step with all but the first adding into the gradient, and gradients
    cleared between steps (carried ones are grads-not-cleared's business)."""
    steps, backward = counts["optimizer_step"], counts["backward"]
    if steps < 1 or backward < 2 * steps:
        return None
    tol = th.cadence_tolerance
    if (counts["loss_without_backward"] > tol * counts["loss"]
            or counts["backward_accumulating"] < (1 - tol) * (backward - steps)
            or counts["grads_carried_steps"] > tol * steps):
        return None
    return int(round(backward / steps))


def _not_accumulating(counts: dict[str, float], steps_done: float, accumulation: int,
                      inferred: int | None, evidence: dict, th: Thresholds) -> list[Finding]:
    """A declared accumulation whose steps come at the right cadence but whose backwards do
    not add up: gradients cleared before every micro-batch's backward (zero_grad inside the
    micro-batch loop), so each step applies its last micro-batch alone."""
    expected = counts["backward"] - steps_done  # backwards that should add to a gradient
    if inferred or accumulation < 2 or not steps_done or expected < steps_done:
        return []
    lost = 1 - counts["backward_accumulating"] / expected
    if lost <= th.cadence_tolerance:
        return []
    evidence = {**evidence, "not_accumulated_fraction": lost}
    return [Finding(
        ID, "error" if lost >= 0.5 else "warning",
        f"Accumulation of {accumulation} batches declared, but gradients were cleared before "
        f"{pct(lost)} of the backwards that should add up: each step used only its last "
        "batch",
        evidence,
        "zero_grad() runs inside the micro-batch loop, so every backward starts from zero and "
        f"{accumulation - 1} of every {accumulation} batches are thrown away. Call zero_grad() "
        "once per optimizer step, right after optimizer.step() (or before the first "
        "micro-batch), and divide each micro-batch loss by the number of micro-batches.")]


def check(run, th: Thresholds) -> list[Finding]:
    cadence = need(run, "cadence", any_of=("optimizer_step",), why="cumulative call counts")
    steps = steps_of(cadence)
    loss, opt = col(cadence, "loss"), col(cadence, "optimizer_step")
    # a step a GradScaler skipped was still attempted: skips are step-skipped's business
    attempts = col(cadence, "step_attempts")
    opt = np.where(np.isfinite(attempts), np.fmax(attempts, opt), opt)
    raw_loss = loss
    loss = _less(loss, cadence, "same_batch_loss")  # batches, not evaluations
    opt = _less(opt, cadence, "shared_backward_steps")  # updates, not step() calls
    ok = np.isfinite(loss) & np.isfinite(opt)
    if not ok.any():
        raise Unchecked("`cadence` records lack cumulative `loss` and `optimizer_step` counts")
    accumulation, stated = intent_accumulation(run)
    counts = totals(cadence, COUNTS, cumulative=True)
    # the accumulation test compares backwards with updates (a closure's backwards run
    # inside its one step, and shared steps add no backward)
    counts["optimizer_step"] = float(np.nanmax(opt[ok]))
    raw_backward = counts["backward"]
    counts["backward"] -= counts["same_batch_backward"]
    # a declared accumulation (> 1) is checked as declared; without one (the Workbench
    # records 1 by default), accumulation that the counts
    # show (k backwards per step adding up, cleared between steps) is the intent
    inferred = None if accumulation > 1 else _inferred_accumulation(counts, th)
    accumulation = inferred or accumulation
    i = np.flatnonzero(ok)[-1]
    calls, steps_done = float(loss[i]), float(opt[i])
    if calls < th.min_cadence_batches * accumulation:
        raise Unchecked(f"only {int(calls)} loss calls (need "
                        f"{th.min_cadence_batches * accumulation} to judge cadence)")
    ratio = steps_done * accumulation / calls
    backward = col(cadence, "backward")
    sched = col(cadence, "scheduler_step")
    evidence = {
        "steps": span(steps[ok]),
        "loss_calls": int(raw_loss[i]),
        "batches": int(calls),
        "same_batch_loss": int(counts["same_batch_loss"]),
        "closure_steps": int(counts["closure_steps"]),
        "shared_backward_steps": int(counts["shared_backward_steps"]),
        "optimizer_steps": int(steps_done),
        "accumulation_intent": accumulation,
        "intent_recorded": stated,
        "accumulation_inferred": inferred,
        "loss_without_backward": int(counts["loss_without_backward"]),
        "backward_accumulating": int(counts["backward_accumulating"]),
        "grads_carried_steps": int(counts["grads_carried_steps"]),
        "ratio": ratio,
        "batches_per_optimizer_step": calls / steps_done if steps_done else None,
    }
    if np.isfinite(backward[i]):
        evidence["backward_calls"] = int(raw_backward)
    if np.isfinite(sched[i]):
        evidence["scheduler_steps"] = int(sched[i])
    # Where it went wrong: the ratio between consecutive cumulative records.
    d_loss = np.diff(loss[ok], prepend=0.0)
    d_opt = np.diff(opt[ok], prepend=0.0)
    with np.errstate(all="ignore"):
        local = np.where(d_loss > 0, d_opt * accumulation / d_loss, np.nan)
    off = np.isfinite(local) & ((local < th.cadence_min_ratio) | (local > th.cadence_max_ratio))
    evidence["off_cadence_ranges"] = step_ranges(steps[ok], off)

    if ratio < th.cadence_min_ratio or ratio > th.cadence_max_ratio:
        severity = "error"
    elif abs(ratio - 1) > th.cadence_tolerance:
        severity = "warning"
    else:
        return _not_accumulating(counts, steps_done, accumulation, inferred, evidence, th)
    story = hint(run, " (this froze a validation loss for three months)")
    if steps_done == 0:
        title = f"optimizer.step() never ran in {int(calls)} training batches"
        fix = FIX_LOW.format(every="∞", story=story)
    elif ratio < 1:
        every = calls / steps_done
        title = (f"{int(steps_done)} optimizer steps for {int(calls)} training batches: one "
                 f"step every {fmt(every)} batches (intent: every {accumulation})")
        fix = FIX_LOW.format(every=fmt(every), story=story)
    else:
        title = (f"{int(steps_done)} optimizer steps for {int(calls)} training batches "
                 f"({fmt(ratio)}× the intended cadence)")
        fix = FIX_HIGH.format(acc=accumulation)
    if "backward_calls" in evidence and evidence["backward_calls"] < calls / 2:
        title += f"; backward ran {evidence['backward_calls']} times"
    elif steps_done and counts["backward"] >= 2 * steps_done and \
            counts["backward_accumulating"] < 0.5 * (counts["backward"] - steps_done):
        title += ("; gradients were cleared before every backward, so each step used only "
                  "its last batch")
    return [Finding(ID, severity, title, evidence, fix)]
