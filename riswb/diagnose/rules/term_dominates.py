"""term-dominates: one term's gradient dwarfs the others.

Two views of every weighted term's gradient (docs/internals.md §3):

* parameters — kind `term_grad`, ‖∂(w·term)/∂θ‖ exact, on front-loaded sampled steps;
* outputs — kind `term_grad_out`, ‖∂(w·term)/∂y‖ at the model's outputs, every log
  interval and the first three loss calls (0 for a term that does not use the outputs).

A term dominates when, in either view, its median norm is at least `dominance_ratio` times
the next live term's and a dwarfed term is not simply minimized, nor weighted down on purpose
(its weight below the top term's, and the unweighted norms within the ratio: an entropy
bonus at 0.01 is meant to be small). A parameter penalty (zero
output gradient, non-zero parameter gradient) dominates already at
`regularizer_dominance_ratio` times the largest output-dependent term: a regularizer is a
correction, and one that outweighs the data terms decides what the model learns. Terms of
weight 0 are left to dead-loss-term; `loss` values tell a satisfied term from a drowned one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from riswb.diagnose.frames import col, value_columns
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    frame_of,
    hint,
    last_values,
    matrix,
    nanmedian,
    span,
    steps_of,
)
from riswb.diagnose.text import fmt

ID = "term-dominates"


def _medians(frame: pd.DataFrame, terms: list[str], th: Thresholds) -> dict[str, float]:
    """Median norm of each term with at least `min_term_samples` finite samples."""
    names = [t for t in terms if t in frame.columns]
    if frame.empty or not names:
        return {}
    values = matrix(frame, names)
    counts = np.isfinite(values).sum(axis=0)
    medians = nanmedian(values, axis=0)
    return {t: float(m) for t, m, c in zip(names, medians, counts, strict=True)
            if c >= th.min_term_samples}


def _satisfied(values: np.ndarray, th: Thresholds) -> bool:
    """Whether a term's own value fell to ~0 of its start: it is minimized, not drowned."""
    values = np.abs(values[np.isfinite(values)])
    if len(values) < 2 * th.min_term_samples:
        return False
    window = max(th.min_term_samples, len(values) // 10)
    start, end = np.median(values[:window]), np.median(values[-window:])
    return bool(end == 0 or (start > 0 and end <= th.satisfied_term_fraction * start))


def _weighted_down(weights: dict, top: str, term: str, ratio: float, needed: float) -> bool:
    """Whether `term` is dwarfed because the loop weighted it down on purpose: its weight is
    below `top`'s, and without the two weights the gradients would be within `needed` of
    each other (an entropy bonus at 0.01, an auxiliary loss at 0.1)."""
    w_top, w_term = abs(float(weights.get(top, 1.0))), abs(float(weights.get(term, 1.0)))
    return 0 < w_term < w_top and ratio * w_term / w_top < needed


def _top_share(frame: pd.DataFrame, live: list[str], top: str) -> float:
    """Fraction of sampled steps on which `top` had the largest norm of the live terms."""
    values = np.where(np.isfinite(v := matrix(frame, live)), v, -np.inf)
    return float(np.mean(np.argmax(values, axis=1) == live.index(top)))


def check(run, th: Thresholds) -> list[Finding]:
    frames = {"parameters": frame_of(run, "term_grad"), "outputs": frame_of(run, "term_grad_out")}
    if all(f.empty for f in frames.values()):
        raise Unchecked("no `term_grad` or `term_grad_out` records (per-term gradient norms)")
    weights_frame = frame_of(run, "loss_weight")
    weights = last_values(weights_frame, value_columns(weights_frame))
    terms = sorted({t for f in frames.values() for t in value_columns(f)
                    if weights.get(t, 1.0) != 0})
    medians = {view: _medians(frame, terms, th) for view, frame in frames.items()}
    live = {view: {t: m for t, m in med.items() if np.isfinite(m) and m > th.dead_term_grad}
            for view, med in medians.items()}

    # (view, top, dwarfed terms, ratio to the largest of them, ratio needed)
    candidates: list[tuple[str, str, list[str], float, float]] = []
    judged = False
    for view, norms in live.items():
        if len(norms) < 2:
            continue
        judged = True
        ranked = sorted(norms, key=norms.get, reverse=True)
        top = ranked[0]
        ratio = norms[top] / norms[ranked[1]]
        if ratio >= th.dominance_ratio:
            dwarfed = [t for t in ranked[1:] if norms[t] * th.dominance_ratio <= norms[top]]
            candidates.append((view, top, dwarfed, ratio, th.dominance_ratio))
    params, outputs = live["parameters"], medians["outputs"]
    penalties = [t for t in params if t in outputs and outputs[t] <= th.dead_term_grad]
    data_terms = [t for t in params if outputs.get(t, 0.0) > th.dead_term_grad]
    if penalties and data_terms:
        judged = True
        top = max(penalties, key=params.get)
        ratio = params[top] / max(params[t] for t in data_terms)
        if ratio >= th.regularizer_dominance_ratio:
            candidates.append(("penalty", top, sorted(data_terms, key=params.get, reverse=True),
                               ratio, th.regularizer_dominance_ratio))
    if not judged:
        raise Unchecked("fewer than two weighted terms with enough sampled gradient norms "
                        "that send a gradient (see dead-loss-term)")

    loss = frame_of(run, "loss")
    findings = []
    for view, top, dwarfed, ratio, needed in candidates:
        satisfied = [t for t in dwarfed if _satisfied(col(loss, t), th)]
        drowned = [t for t in dwarfed if t not in satisfied
                   and not (view != "penalty" and _weighted_down(weights, top, t, ratio, needed))]
        if drowned:
            findings.append((ratio / needed, view, top, drowned, satisfied, ratio))
    if not findings:
        return []
    _, view, top, drowned, satisfied, ratio = max(findings, key=lambda f: f[0])
    source = "outputs" if view == "outputs" else "parameters"
    norms = live[source]
    frame = frames[source]
    penalty = view == "penalty"
    title = (f"Term '{top}' does not depend on the model's outputs (a parameter penalty) yet "
             f"its gradient is {fmt(ratio)}× the largest data term's ('{drowned[0]}')"
             if penalty else
             f"Term '{top}' dominates: its gradient ({source}) is {fmt(ratio)}× the next "
             f"term's ('{sorted(norms, key=norms.get, reverse=True)[1]}')")
    fix = (
        f"The other terms barely steer training. Check '{top}''s scale first: a term on "
        "another scale by orders of magnitude (an un-normalized input or target, a sum where a "
        "mean was meant) inflates its gradient."
        + hint(run, " Here a covariance that was not trace-normalized (‖R_samp‖ = 3e-4 "
               "against ‖R_blend‖ = 3.5e12) did exactly that.")
        + " Then rebalance the weights from these gradient norms (bring them within ~10× of "
        "each other) or use an adaptive scheme (GradNorm, uncertainty weighting).")
    if penalty:
        fix = (f"'{top}' pulls the parameters harder than every data term together: lower its "
               "weight (a penalty should be a correction, typically well under the data "
               "gradient), or use the optimizer's weight_decay, which does not enter the "
               "loss. " + fix)
    return [Finding(
        ID, "warning", title,
        {
            "term": top,
            "view": view,
            "steps": span(steps_of(frame)),
            "ratio_to_second": ratio,
            "median_grad_norm": {t: float(m) for t, m in medians["parameters"].items()},
            "median_output_grad_norm": {t: float(m) for t, m in medians["outputs"].items()},
            "drowned_terms": drowned,
            "satisfied_terms": satisfied,
            "top_on_fraction_of_steps": _top_share(frame, list(norms), top),
            "weights_used": {t: weights[t] for t in terms if t in weights} or None,
            "dominance_ratio": th.dominance_ratio,
            "regularizer_dominance_ratio": th.regularizer_dominance_ratio,
        },
        fix,
    )]
