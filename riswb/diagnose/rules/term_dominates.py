"""term-dominates: one term's gradient norm dwarfs the others.

Reads kind `term_grad` (‖∂(w·term)/∂θ‖ per term on sampled steps) and `loss_weight`
(terms with weight 0 are left to dead-loss-term).
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col, value_columns
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    frame_of,
    last_values,
    matrix,
    nanmedian,
    need,
    span,
    steps_of,
)
from riswb.diagnose.text import fmt

ID = "term-dominates"


def _satisfied(values: np.ndarray, th: Thresholds) -> bool:
    """Whether a term's own value fell to ~0 of its start: it is minimized, not drowned."""
    values = np.abs(values[np.isfinite(values)])
    if len(values) < 2 * th.min_term_samples:
        return False
    window = max(th.min_term_samples, len(values) // 10)
    start, end = np.median(values[:window]), np.median(values[-window:])
    return bool(end == 0 or (start > 0 and end <= th.satisfied_term_fraction * start))


def check(run, th: Thresholds) -> list[Finding]:
    grads = need(run, "term_grad", why="per-term gradient norms on sampled steps")
    weights_frame = frame_of(run, "loss_weight")
    weights = last_values(weights_frame, value_columns(weights_frame))
    terms = [t for t in value_columns(grads) if weights.get(t, 1.0) != 0]
    values = matrix(grads, terms)
    counts = np.isfinite(values).sum(axis=0)
    keep = counts >= th.min_term_samples
    terms = [t for t, k in zip(terms, keep, strict=True) if k]
    values = values[:, keep]
    if values.shape[1] < 2:
        raise Unchecked("fewer than two weighted terms with enough sampled gradient norms")
    with np.errstate(all="ignore"):
        medians = nanmedian(values, axis=0)
    live = np.isfinite(medians) & (medians > th.dead_term_grad)
    if live.sum() < 2:
        raise Unchecked("fewer than two terms send a gradient (see dead-loss-term)")
    order = np.argsort(-np.where(live, medians, -np.inf))
    top, second = order[0], order[1]
    ratio = float(medians[top] / medians[second])
    if ratio < th.dominance_ratio:
        return []
    steps = steps_of(grads)
    live_values = np.where(np.isfinite(values), values, -np.inf)[:, live]
    live_terms = [t for t, ok in zip(terms, live, strict=True) if ok]
    per_step_top = np.argmax(live_values, axis=1)
    top_share = float(np.mean(per_step_top == live_terms.index(terms[top])))
    dwarfed = [t for t, m, ok in zip(terms, medians, live, strict=True)
               if ok and m * th.dominance_ratio <= medians[top] and t != terms[top]]
    loss = frame_of(run, "loss")
    satisfied = [t for t in dwarfed if _satisfied(col(loss, t), th)]
    drowned = [t for t in dwarfed if t not in satisfied]
    if not drowned:
        return []
    return [Finding(
        ID, "warning",
        f"Term '{terms[top]}' dominates: its gradient is {fmt(ratio)}× the next term's "
        f"('{terms[second]}')",
        {
            "term": terms[top],
            "steps": span(steps),
            "ratio_to_second": ratio,
            "median_grad_norm": {t: float(m) for t, m in zip(terms, medians, strict=True)},
            "drowned_terms": drowned,
            "satisfied_terms": satisfied,
            "top_on_fraction_of_steps": top_share,
            "weights_used": {t: weights[t] for t in terms if t in weights} or None,
            "dominance_ratio": th.dominance_ratio,
        },
        f"The other terms barely steer training. Check '{terms[top]}''s scale first: a "
        "covariance that is not trace-normalized (‖R_samp‖ = 3e-4 against ‖R_blend‖ = 3.5e12) "
        "inflates one term by many orders of magnitude. Then rebalance the weights from these "
        "gradient norms (bring them within ~10× of each other) or use an adaptive scheme "
        "(GradNorm, uncertainty weighting).",
    )]
