"""nonfinite-grads: non-finite gradients appeared, masked by sanitization or not; which term.

Reads kind `nonfinite` (`grad_elems` counted on the raw gradient before sanitization,
`params`, `sanitized` — wb.sanitize_'s count or the loop's own nan_to_num_ seen by
grad_step —, and per optimizer-step attempt `step_attempts`, `attempts_nonfinite`,
`attempts_skipped`), kind `term_nonfinite` (per term, sampled steps) to attribute the
term, `step_skipped` events with reason `scaler` (AMP overflow handled by GradScaler), and
kind `param_update` (`ratio` on the front-loaded steps): updates growing past the weights'
own size before the first non-finite gradient name divergence (the lr), not a singular op.
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col, value_columns
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    events,
    frame_of,
    hint,
    matrix,
    n_ranges,
    need,
    scaler_calibration,
    span,
    step_ranges,
    steps_of,
    totals,
)
from riswb.diagnose.text import fmt, pct

ID = "nonfinite-grads"


def check(run, th: Thresholds) -> list[Finding]:
    nf = need(run, "nonfinite", any_of=("grad_elems", "sanitized"),
              why="raw non-finite gradient counts")
    steps = steps_of(nf)
    elems = np.nan_to_num(col(nf, "grad_elems"), nan=0.0)
    sanitized = np.nan_to_num(col(nf, "sanitized"), nan=0.0)
    params = np.nan_to_num(col(nf, "params"), nan=0.0)
    bad = (elems > 0) | (sanitized > 0)

    tn = frame_of(run, "term_nonfinite")
    terms: dict[str, dict] = {}
    if not tn.empty:
        names = value_columns(tn)
        values = np.nan_to_num(matrix(tn, names), nan=0.0)
        tsteps = steps_of(tn)
        for j, name in enumerate(names):
            hit = values[:, j] > 0
            if hit.any():
                terms[name] = {"elems": int(values[hit, j].sum()), "sampled_steps": int(hit.sum()),
                               "first_step": int(tsteps[hit][0])}
    if not bad.any() and not terms:
        return []

    scaler_skips = sum(int(e.get("count", 1) or 1) for e in events(run, "step_skipped")
                       if e.get("reason") == "scaler")
    n_bad = int(bad.sum())
    fraction = n_bad / max(1, len(nf))
    total_sanitized = int(sanitized.sum())
    attempts = totals(nf, ("step_attempts", "attempts_nonfinite", "attempts_skipped"),
                      cumulative=False)
    first_candidates = [int(steps[bad][0])] if bad.any() else []
    first_candidates += [t["first_step"] for t in terms.values()]
    first = min(first_candidates)
    evidence = {
        "steps": span(steps),
        "first_step": first,
        "records_with_nonfinite": n_bad,
        "fraction_of_records": fraction,
        "nonfinite_ranges": step_ranges(steps, bad),
        "n_ranges": n_ranges(bad),
        "grad_elems": int(elems.sum()),
        "max_params_affected": int(params.max()) if len(params) else 0,
        "sanitized_elems": total_sanitized,
        "terms": terms,
        "scaler_skips": scaler_skips,
    }
    culprit = sorted(terms, key=lambda t: terms[t]["first_step"])
    named = f" from term(s) {', '.join(culprit)}" if culprit else ""
    source = (
        f"Fix the source{named}: a square root, division or logarithm at exactly 0, or a "
        "backward through a decomposition with repeated eigenvalues (use eigenvalue-only "
        "functions such as eigvalsh for eigenvalue terms, and projectors instead of "
        "eigenvectors)."
        + hint(run, " Here it was backprop through eigh on a rank-deficient R_pred "
               "(degenerate noise eigenvalues make eigenvector gradients infinite): use "
               "eigvalsh/svdvals, projectors UUᴴ or F(FᴴF+δI)⁻¹Fᴴ, and Hermitize before "
               "decomposing.")
    )
    if total_sanitized > 0:
        return [Finding(
            ID, "error",
            f"Non-finite gradients on {n_bad} logged steps{named}, masked by sanitization "
            f"({total_sanitized} elements replaced; first at step {first})",
            evidence,
            "Sanitization hides the problem: the optimizer steps on zeroed gradients, and "
            "replacing NaN by 0 and ±inf by ±1 also hides float16 overflow from a GradScaler, "
            "which then never skips the step. " + source)]
    if attempts["step_attempts"] > 0:
        # per optimizer-step attempt: a few overflows the scaler skipped while calibrating
        # its scale are normal AMP; non-finite gradients on every attempt are not
        n_attempts, n_nonfinite = attempts["step_attempts"], attempts["attempts_nonfinite"]
        excess = max(0.0, n_nonfinite - scaler_calibration(run, th))
        evidence.update(step_attempts=int(n_attempts), attempts_nonfinite=int(n_nonfinite),
                        attempts_skipped=int(attempts["attempts_skipped"]))
        handled = (scaler_skips > 0 and attempts["attempts_skipped"] >= n_nonfinite
                   and excess / n_attempts <= th.max_nonfinite_grad_fraction)
        fraction = n_nonfinite / n_attempts
        count = f"{int(n_nonfinite)} of {int(n_attempts)} optimizer-step attempts"
    else:
        handled = scaler_skips >= n_bad and fraction <= th.max_nonfinite_grad_fraction
        count = f"{n_bad} logged steps"
    if handled:
        return [Finding(
            ID, "info",
            f"Non-finite gradients on {count} ({pct(fraction)}), each skipped by the "
            "GradScaler (scale calibration / normal AMP overflow)",
            evidence,
            "Nothing to do while the rate stays this low; if it grows, compute the "
            "overflowing part of the loss in float32 (autocast(enabled=False)).")]
    at_start = " at the first step" if first == int(steps.min()) else ""
    diverged = _diverged(run, first)
    if diverged is not None:
        evidence["diverged"] = diverged
        return [Finding(
            ID, "error",
            f"Non-finite gradients on {count} ({pct(fraction)}){named}; first at step "
            f"{first}, after the updates diverged (‖Δθ‖/‖θ‖ up to "
            f"{fmt(diverged['peak_update_ratio'])} by step {diverged['peak_at_step']})",
            evidence,
            "The updates grew step after step until the weights overflowed: each step "
            "moved the weights by more than their own size. The learning rate is too high "
            "for this model (a typo of 2.0 for 2e-2, a scaled-up batch without warm-up): "
            "lower it, add a warm-up, or clip gradients with clip_grad_norm_. Count on the "
            "raw gradient, before any nan_to_num.")]
    return [Finding(
        ID, "error",
        f"Non-finite gradients on {count} ({pct(fraction)}){named}; first at step "
        f"{first}{at_start}",
        evidence,
        ("Non-finite gradients at batch 0 with a finite loss point at a backward that is "
         "singular at init, not at divergence. " if at_start else "")
        + source + " Count on the raw gradient, before any nan_to_num.")]


def _diverged(run, first: int) -> dict | None:
    """Divergence before the first non-finite gradient (kind `param_update`, front-loaded):
    an update at least as big as the weights (‖Δθ‖/‖θ‖ ≥ 1) after a first one ten times
    smaller — the lr, not a singular op. None without that evidence."""
    updates = frame_of(run, "param_update")
    if "ratio" not in updates.columns:
        return None
    ustep, ratio = steps_of(updates), col(updates, "ratio")
    before = (ustep <= first) & np.isfinite(ratio)
    values, at = ratio[before], ustep[before]
    if len(values) < 2:
        return None
    peak = int(np.argmax(values))
    if values[peak] < 1 or values[peak] < 10 * values[0]:
        return None
    return {"first_update_ratio": float(values[0]), "peak_update_ratio": float(values[peak]),
            "peak_at_step": int(at[peak])}
