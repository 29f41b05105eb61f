"""term-conflict: two terms' gradients point in opposite directions.

Reads the pair cosines of two views (pair keys escaped, docs/internals.md §3): kind
`term_cosine` (parameter gradients, exact, front-loaded sampled steps) and kind
`term_cosine_out` (gradients at the model's outputs, every log interval); for context,
`term_grad` norms (cancel = similar norms at cosine ≤ -0.9). Info, not a warning, when the
loss calls alternate between objectives (kind `loss`: a GAN), where terms fight by design,
when in every conflicting pair the weaker term's norm is under `WEAK_SHARE` of the
stronger's (an entropy bonus against a policy loss: the update follows the stronger), and
when every conflict is gone in the second half of the run (at least `_LATE_SAMPLES` samples
there, median cosine above the threshold): the samples are front-loaded, so a median over
all of them would be the first steps' verdict.
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    alternating_objectives,
    frame_of,
    hint,
    matrix,
    nanmedian,
    pair_columns,
    span,
    steps_of,
)
from riswb.diagnose.text import fmt, pct

ID = "term-conflict"
# a conflict whose weaker term is under this share of the stronger's norm hardly bends the
# update (it removes at most that share of the stronger term's gradient): info
WEAK_SHARE = 0.1
VIEWS = {"parameters": ("term_cosine", "term_grad"),
         "outputs": ("term_cosine_out", "term_grad_out")}


def _conflicts(run, view: str, th: Thresholds) -> tuple[bool, list[dict], list[int]]:
    """(whether any pair had enough samples, the conflicting pairs, the view's steps)."""
    kind, norm_kind = VIEWS[view]
    cos = frame_of(run, kind)
    pairs = pair_columns(cos)
    if not pairs:
        return False, [], []
    values = matrix(cos, [key for key, _, _ in pairs])
    ok = np.isfinite(values)
    counts = ok.sum(axis=0)
    with np.errstate(all="ignore"):
        medians = nanmedian(np.where(ok, values, np.nan), axis=0)
        below = (np.where(ok, values, np.inf) <= th.conflict_cosine).sum(axis=0)
    judged = counts >= th.min_term_samples
    bad = judged & (medians <= th.conflict_cosine)
    grads = frame_of(run, norm_kind)
    csteps = steps_of(cos)
    late = csteps > _midpoint(run, csteps)
    out = []
    for i in np.flatnonzero(bad):
        _, a, b = pairs[i]
        entry = {"pair": [a, b], "view": view, "median_cosine": float(medians[i]),
                 "min_cosine": float(np.nanmin(values[:, i])),
                 "fraction_below": float(below[i] / counts[i]), "sampled_steps": int(counts[i])}
        # samples are front-loaded: a conflict of the first steps that the second half of
        # the run no longer shows was resolved by training (e.g. boundary terms that fight
        # until the interior fits)
        later = values[late & ok[:, i], i]
        if len(later) >= _LATE_SAMPLES and float(np.median(later)) > th.conflict_cosine:
            entry["resolved"] = {"later_median_cosine": float(np.median(later)),
                                 "later_samples": int(len(later)),
                                 "after_step": int(csteps[late][0])}
        norms = [col(grads, t) for t in (a, b)] if not grads.empty else []
        if norms and all(np.isfinite(n).any() for n in norms):
            na, nb = (float(nanmedian(n)) for n in norms)
            entry["median_grad_norm"] = {a: na, b: nb}
            entry["cancel"] = bool(min(na, nb) > 0 and max(na, nb) / min(na, nb) < 3
                                   and medians[i] <= -0.9)
            entry["weaker_share"] = min(na, nb) / max(na, nb) if max(na, nb) > 0 else 0.0
        out.append(entry)
    return bool(judged.any()), out, span(steps_of(cos))


_LATE_SAMPLES = 3  # samples in the second half of the run that can show a conflict resolved


def _midpoint(run, fallback: np.ndarray) -> float:
    """The middle of the run's steps (its loss records; else the sampled steps')."""
    loss = frame_of(run, "loss")
    steps = steps_of(loss) if not loss.empty else fallback
    return float(steps.min() + (steps.max() - steps.min()) / 2) if len(steps) else 0.0


def check(run, th: Thresholds) -> list[Finding]:
    judged, conflicts, steps = False, [], []
    for view in VIEWS:
        view_judged, found, view_steps = _conflicts(run, view, th)
        judged |= view_judged
        conflicts += found
        steps += view_steps
    if not judged:
        raise Unchecked(f"fewer than {th.min_term_samples} finite gradient cosines for every "
                        "pair of terms (`term_cosine`, `term_cosine_out`)")
    if not conflicts:
        return []
    conflicts.sort(key=lambda c: c["median_cosine"])
    worst = conflicts[0]
    a, b = worst["pair"]
    cancel = " and cancel each other" if worst.get("cancel") else ""
    evidence = {"steps": [min(steps), max(steps)], "conflicts": conflicts[:10],
                "n_conflicts": len(conflicts), "conflict_cosine": th.conflict_cosine}
    loss = run.kind("loss")
    objectives = alternating_objectives(loss, np.isfinite(col(loss, "total")))
    if all(c.get("weaker_share", 1.0) < WEAK_SHARE for c in conflicts):
        weak, strong = sorted(worst["pair"], key=worst["median_grad_norm"].get)
        return [Finding(
            ID, "info",
            f"Terms '{a}' and '{b}' point against each other (median gradient cosine "
            f"{fmt(worst['median_cosine'])} at the {worst['view']}), but '{weak}' is "
            f"{fmt(1 / worst['weaker_share'])}× weaker: the update follows '{strong}'",
            evidence,
            f"A small term opposing the main one — an entropy bonus against the policy loss, "
            f"a regularizer against the fit — pulls back by design, and at this size it only "
            f"trims '{strong}''s gradient. Look here only if '{weak}' is meant to matter.")]
    if all("resolved" in c for c in conflicts):
        later = worst["resolved"]
        return [Finding(
            ID, "info",
            f"Terms '{a}' and '{b}' pulled against each other early in the run (median "
            f"gradient cosine {fmt(worst['median_cosine'])} at the {worst['view']}), not in "
            f"its second half (median {fmt(later['later_median_cosine'])} over "
            f"{later['later_samples']} samples after step {later['after_step']})",
            evidence,
            "Terms that fight while the model is far from fitting either (a boundary term "
            "against the interior, a regularizer against an untrained fit) stop fighting "
            "as it learns. Look here only if training was slow to start.")]
    if objectives:  # adversarial training: terms fight by design (a critic's real vs fake)
        evidence["objectives"] = objectives
        return [Finding(
            ID, "info",
            f"Terms '{a}' and '{b}' pull against each other (median gradient cosine "
            f"{fmt(worst['median_cosine'])} at the {worst['view']}) in a run whose loss "
            f"alternates between {len(objectives)} objectives",
            evidence,
            "In adversarial training (a GAN's discriminator and generator) terms oppose each "
            "other by design: a critic's real and fake terms anti-align more as the "
            "generator's samples come closer to the data. Look here only if one objective "
            "stops learning.",
        )]
    return [Finding(
        ID, "warning",
        f"Terms '{a}' and '{b}' pull against each other{cancel} (median gradient cosine "
        f"{fmt(worst['median_cosine'])} at the {worst['view']}, ≤ {fmt(th.conflict_cosine)} "
        f"on {pct(worst['fraction_below'])} of sampled steps)",
        evidence,
        f"'{a}' and '{b}' push the model in opposite directions, so the net gradient partly "
        "cancels. First check both target the same quantity with the same sign and ordering "
        "(a flipped sign, or values sorted in the opposite order, makes two terms fight)."
        + hint(run, " Here singular values flipped to ascending order once made the eigengap "
               "hinge push the wrong gap.")
        + " If the conflict is real, ramp the weaker term in later, lower its weight, or project "
        "out the conflicting component (PCGrad).",
    )]
