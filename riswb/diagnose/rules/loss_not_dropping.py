"""loss-not-dropping: the training loss does not fall.

Reads kind `loss` (`total`) and, for the frozen-validation symptom, kind `eval`.
Start = median of the first `loss_window` finite records; best = the lowest rolling median
of that window; end = median of the last window. Relative drop = (start - best)/|start|.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from riswb.diagnose.frames import col, value_columns
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, frame_of, need, span, steps_of
from riswb.diagnose.text import fmt, pct

ID = "loss-not-dropping"

FIX = (
    "The model is not learning. This is the symptom; look at the findings ranked above it "
    "first. Known causes: optimizer.step() once per epoch instead of per batch "
    "(step-cadence), lr stuck at 0 in warm-up (lr-stalled), skipped steps (step-skipped), "
    "a main loss weight that defaulted to 0 (dead-loss-term), or loss scaling left inside a "
    "debug-only `if` block. Confirm the loop can overfit a few hundred samples "
    "(`riswb overfit`)."
)


def check(run, th: Thresholds) -> list[Finding]:
    frame = need(run, "loss", any_of=("total",), why="wb.loss() records the loss terms")
    steps, total = steps_of(frame), col(frame, "total")
    finite = np.isfinite(total)
    values, vsteps = total[finite], steps[finite]
    n = len(values)
    if n < th.min_loss_records:
        raise Unchecked(f"only {n} finite loss records (need {th.min_loss_records} for a trend)")
    findings: list[Finding] = []
    window = int(max(3, min(th.loss_window, n // 5)))
    # the larger of the first window's median and the first few records' median: a loss
    # that falls within the first window must not read as "started low"
    start = float(max(np.median(values[:window]), np.median(values[:min(5, window)])))
    end = float(np.median(values[-window:]))
    rolling = pd.Series(values).rolling(window).median().to_numpy()[window - 1:]
    best_i = int(np.nanargmin(rolling))
    best = float(rolling[best_i])
    best_step = int(vsteps[window - 1 + best_i])
    evidence = {
        "steps": span(vsteps),
        "records": n,
        "window": window,
        "start": start,
        "best": best,
        "best_at_step": best_step,
        "end": end,
    }
    if np.ptp(values) == 0:
        evidence["constant_value"] = float(values[0])
        if values[0] == 0:
            findings.append(Finding(
                ID, "error", f"The total loss is exactly 0 on all {n} logged steps",
                evidence,
                "A loss of exactly 0 sends no gradient. Likely cause: the main loss weight "
                "was never passed and defaulted to 0, or a constructor hard-coded weights "
                "that config changes never reach (see dead-loss-term and the loss_weight "
                "records for the weights actually used)."))
        else:
            findings.append(Finding(
                ID, "error", f"The total loss is constant at {fmt(float(values[0]))} on all "
                f"{n} logged steps", evidence, FIX))
    else:
        denom = max(abs(start), 1e-12)
        drop = (start - best) / denom
        evidence["relative_drop"] = drop
        evidence["min_loss_drop"] = th.min_loss_drop
        if drop < th.min_loss_drop:
            verb = "rose" if end > start else "did not fall"
            findings.append(Finding(
                ID, "error",
                f"The training loss {verb}: {fmt(start)} at the start, best {fmt(best)}, "
                f"{fmt(end)} at the end ({pct(max(drop, 0))} drop over {n} records)",
                evidence, FIX))
        else:
            gain = start - best
            rebound = (end - best) / gain if gain > 0 else 0.0
            if rebound > th.max_loss_rebound:
                evidence["rebound_fraction"] = rebound
                findings.append(Finding(
                    ID, "warning",
                    f"The training loss fell to {fmt(best)} by step {best_step}, then rose "
                    f"back to {fmt(end)} (gave back {pct(rebound)} of its gain)",
                    evidence,
                    "Training diverges after a good start: lower the peak lr or lengthen the "
                    "decay, check for non-finite gradients that sanitization hides "
                    "(nonfinite-grads), and check that EMA/SWA swaps restore the training "
                    "weights (weights-swapped)."))

    # Frozen validation metric (docs/failures.md #1: "validation loss frozen at the same value").
    ev = frame_of(run, "eval")
    if len(ev) >= 3:
        for name in value_columns(ev):
            metric = col(ev, name)
            ok = np.isfinite(metric)
            if ok.sum() >= 3 and np.ptp(metric[ok]) == 0:
                findings.append(Finding(
                    ID, "warning",
                    f"Validation metric '{name}' is frozen at {fmt(float(metric[ok][0]))} "
                    f"over {int(ok.sum())} evaluations",
                    {"metric": name, "value": float(metric[ok][0]),
                     "evaluations": int(ok.sum()), "steps": span(steps_of(ev)[ok])},
                    "A validation metric that never changes means the evaluated weights never "
                    "change: optimizer.step() running once per epoch on the last batch "
                    "(step-cadence), a zero lr (lr-stalled), or evaluation of a stale copy "
                    "of the model (weights-swapped)."))
                break
    return findings
