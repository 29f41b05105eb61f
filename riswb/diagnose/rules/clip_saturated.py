"""clip-saturated: gradient clipping active on nearly every step.

Reads kind `clip` (`norm` pre-clip, `max_norm`, `ratio` = min(1, max_norm/norm), `clipped`).
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, need, span, steps_of
from riswb.diagnose.text import fmt, pct

ID = "clip-saturated"


def check(run, th: Thresholds) -> list[Finding]:
    clip = need(run, "clip", any_of=("clipped", "ratio"),
                why="the run did not clip through wb.clip_grad_norm_, or not at all")
    steps = steps_of(clip)
    clipped, ratio = col(clip, "clipped"), col(clip, "ratio")
    norm, max_norm = col(clip, "norm"), col(clip, "max_norm")
    active = np.where(np.isfinite(clipped), clipped > 0, np.isfinite(ratio) & (ratio < 1))
    valid = np.isfinite(clipped) | np.isfinite(ratio)
    n = int(valid.sum())
    if n < 3:
        raise Unchecked(f"only {n} clip records")
    fraction = float(active[valid].mean())
    if fraction < th.clip_saturation:
        return []
    finite_ratio = ratio[np.isfinite(ratio)]
    finite_norm = norm[np.isfinite(norm)]
    median_ratio = float(np.median(finite_ratio)) if len(finite_ratio) else None
    evidence = {
        "steps": span(steps[valid]),
        "records": n,
        "clipped_fraction": fraction,
        "median_ratio": median_ratio,
        "median_norm": float(np.median(finite_norm)) if len(finite_norm) else None,
        "p10_norm": float(np.percentile(finite_norm, 10)) if len(finite_norm) else None,
        "max_norm": float(np.nanmedian(max_norm)) if np.isfinite(max_norm).any() else None,
        "clip_saturation": th.clip_saturation,
    }
    severe = median_ratio is not None and median_ratio <= th.clip_severe_ratio
    scale = f"; updates shrunk ~{fmt(1 / median_ratio)}×" if median_ratio else ""
    return [Finding(
        ID, "error" if severe else "warning",
        f"Gradient clipping is active on {pct(fraction)} of {n} steps{scale}",
        evidence,
        f"Clipping has turned into gradient normalization: every update is rescaled to "
        f"max_norm ({fmt(evidence['max_norm'])}) while the pre-clip norm is typically "
        f"{fmt(evidence['median_norm'])}, so the effective lr is lr × {fmt(median_ratio)}. "
        "Raise max_norm to about the pre-clip norm of healthy steps, or find what inflates "
        "the norm (a term on the wrong scale: term-dominates; non-finite spikes: "
        "nonfinite-grads).",
    )]
