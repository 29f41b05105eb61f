"""clip-saturated: gradient clipping active on nearly every step (info while it only trims
the updates: median ratio above `clip_warn_ratio`; info too under optimizers whose update
divides by a running gradient magnitude — Adam-type, RMSprop, Adagrad: manifest
`optimizers` — unless the ratio is severe, since a steady rescale leaves their step size
about lr).

Reads kind `clip`: from `wb.clip_grad_norm_` calls (`observed` 0), or observed at
optimizer.step by grad_step when the loop clips by itself (`observed` 1: torch's own
clip_grad_norm_ or any uniform downscale). `norm` pre-clip, `max_norm`, `ratio` =
min(1, max_norm/norm), `clipped` = fraction of the record's `calls` (steps) that clipped.
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    need,
    scale_invariant_optimizers,
    span,
    steps_of,
)
from riswb.diagnose.text import fmt, pct

ID = "clip-saturated"


def check(run, th: Thresholds) -> list[Finding]:
    clip = need(run, "clip", any_of=("clipped", "ratio"),
                why="no wb.clip_grad_norm_ call and no optimizer step observed")
    steps = steps_of(clip)
    clipped, ratio = col(clip, "clipped"), col(clip, "ratio")
    norm, max_norm = col(clip, "norm"), col(clip, "max_norm")
    # each record stands for `calls` clipping calls or observed steps (1 in older runs)
    calls = np.nan_to_num(col(clip, "calls"), nan=1.0) if "calls" in clip.columns \
        else np.ones(len(clip))
    active = np.where(np.isfinite(clipped), clipped,
                      (np.isfinite(ratio) & (ratio < 1)).astype(float))
    valid = (np.isfinite(clipped) | np.isfinite(ratio)) & (calls > 0)
    n = int(calls[valid].sum())
    if n < 3:
        raise Unchecked(f"only {n} clipping calls or observed steps")
    fraction = float((active[valid] * calls[valid]).sum() / n)
    if fraction < th.clip_saturation:
        return []
    finite_ratio = ratio[np.isfinite(ratio)]
    finite_norm = norm[np.isfinite(norm)]
    median_ratio = float(np.median(finite_ratio)) if len(finite_ratio) else None
    observed = col(clip, "observed")
    evidence = {
        "steps": span(steps[valid]),
        "records": int(valid.sum()),
        "clip_steps": n,
        "observed_at_step": bool(np.nanmax(observed) > 0) if np.isfinite(observed).any()
        else False,
        "clipped_fraction": fraction,
        "median_ratio": median_ratio,
        "median_norm": float(np.median(finite_norm)) if len(finite_norm) else None,
        "p10_norm": float(np.percentile(finite_norm, 10)) if len(finite_norm) else None,
        "max_norm": float(np.nanmedian(max_norm)) if np.isfinite(max_norm).any() else None,
        "clip_saturation": th.clip_saturation,
    }
    severe = median_ratio is not None and median_ratio <= th.clip_severe_ratio
    mild = median_ratio is not None and median_ratio > th.clip_warn_ratio
    how = " (observed at optimizer.step)" if evidence["observed_at_step"] else ""
    adaptive = scale_invariant_optimizers(run)
    if adaptive and not severe:
        evidence["optimizers"] = adaptive
        return [Finding(
            ID, "info",
            f"Gradient clipping is active on {pct(fraction)} of {n} steps{how}, under "
            f"{', '.join(adaptive)}: the update barely changes",
            evidence,
            f"{', '.join(adaptive)} divides each update by a running gradient magnitude, so "
            "a clip that rescales every step by a similar factor leaves the step size at "
            f"about lr (pre-clip norm typically {fmt(evidence['median_norm'])} against "
            f"max_norm {fmt(evidence['max_norm'])}). The clip no longer singles out "
            "spikes, though: to keep that protection, set max_norm near the pre-clip norm "
            "of healthy steps.",
        )]
    scale = f"; updates shrunk ~{fmt(1 / median_ratio)}×" if median_ratio else ""
    return [Finding(
        ID, "error" if severe else "info" if mild else "warning",
        f"Gradient clipping is active on {pct(fraction)} of {n} steps{how}{scale}",
        evidence,
        f"Clipping has turned into gradient normalization: every update is rescaled to "
        f"max_norm ({fmt(evidence['max_norm'])}) while the pre-clip norm is typically "
        f"{fmt(evidence['median_norm'])}, so the effective lr is lr × {fmt(median_ratio)}. "
        "Raise max_norm to about the pre-clip norm of healthy steps, or find what inflates "
        "the norm (a term on the wrong scale: term-dominates; non-finite spikes: "
        "nonfinite-grads).",
    )]
