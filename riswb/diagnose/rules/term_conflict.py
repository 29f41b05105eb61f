"""term-conflict: two terms' gradients point in opposite directions.

Reads kind `term_cosine` (`"<a>|<b>"`: cosine between the two terms' gradients on sampled
steps) and, for context, kind `term_grad`.
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, frame_of, matrix, nanmedian, need, span, steps_of
from riswb.diagnose.text import fmt, pct

ID = "term-conflict"


def check(run, th: Thresholds) -> list[Finding]:
    cos = need(run, "term_cosine", why="gradient cosines between terms on sampled steps")
    pairs = [c for c in cos.columns if "|" in c]
    if not pairs:
        raise Unchecked("`term_cosine` records hold no '<a>|<b>' pairs")
    values = matrix(cos, pairs)
    ok = np.isfinite(values)
    counts = ok.sum(axis=0)
    with np.errstate(all="ignore"):
        medians = nanmedian(np.where(ok, values, np.nan), axis=0)
        below = (np.where(ok, values, np.inf) <= th.conflict_cosine).sum(axis=0)
    judged = counts >= th.min_term_samples
    if not judged.any():
        raise Unchecked(f"fewer than {th.min_term_samples} finite cosines for every pair")
    bad = judged & (medians <= th.conflict_cosine)
    if not bad.any():
        return []
    grads = frame_of(run, "term_grad")
    steps = steps_of(cos)
    conflicts = []
    for i in np.flatnonzero(bad)[np.argsort(medians[bad])]:
        a, b = pairs[i].split("|", 1)
        entry = {"pair": [a, b], "median_cosine": float(medians[i]),
                 "min_cosine": float(np.nanmin(values[:, i])),
                 "fraction_below": float(below[i] / counts[i]), "sampled_steps": int(counts[i])}
        norms = [col(grads, t) for t in (a, b)] if not grads.empty else []
        if norms and all(np.isfinite(n).any() for n in norms):
            na, nb = (float(nanmedian(n)) for n in norms)
            entry["median_grad_norm"] = {a: na, b: nb}
            entry["cancel"] = bool(min(na, nb) > 0 and max(na, nb) / min(na, nb) < 3
                                   and medians[i] <= -0.9)
        conflicts.append(entry)
    worst = conflicts[0]
    a, b = worst["pair"]
    cancel = " and cancel each other" if worst.get("cancel") else ""
    return [Finding(
        ID, "warning",
        f"Terms '{a}' and '{b}' pull against each other{cancel} (median gradient cosine "
        f"{fmt(worst['median_cosine'])}, ≤ {fmt(th.conflict_cosine)} on "
        f"{pct(worst['fraction_below'])} of sampled steps)",
        {"steps": span(steps), "conflicts": conflicts[:10], "n_conflicts": len(conflicts),
         "conflict_cosine": th.conflict_cosine},
        f"'{a}' and '{b}' push the shared parameters in opposite directions, so the net "
        "gradient partly cancels. First check both target the same quantity with the same "
        "sign and ordering (singular values flipped to ascending order made the eigengap "
        "hinge push the wrong gap). If the conflict is real, ramp the weaker term in later, "
        "lower its weight, or project out the conflicting component (PCGrad).",
    )]
