"""grads-altered: the loop's own code changed the gradients between backward and step.

Reads kind `grad_step` (per flush: `steps` observed; fractions of them `zeroed` — all
gradients zero or None at step while non-zero at backward —, `replaced` — a `.grad` set to
None or to another tensor —, `altered` — per-tensor factors differ: masking, partial zeroing
—, `sanitized` elements; elementwise `frac_zeroed` on sampled steps) and the
`grad_step_change` events. Info when the elementwise samples saw no element zeroed and no
step zeroed or replaced gradients: a value clip (`clip_grad_value_`: every alteration shrank
tensors, `altered_down`), gradient noise injection or a per-layer scale. Not alterations: a
GradScaler's unscale_ (`unscaled`), uniform clipping (`rescaled`: clip-saturated's business)
and nan_to_num of non-finite gradients (nonfinite-grads' business). Under DDP (manifest
`distributed.world_size` > 1) the all-reduce legitimately replaces gradients: the finding is
then info.
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    events,
    need,
    span,
    step_ranges,
    steps_of,
    world_size,
)
from riswb.diagnose.text import pct

ID = "grads-altered"

CHANGES = {
    "zeroed": "zeroed",
    "replaced": "set to None or replaced by another tensor",
    "altered": "masked or scaled per tensor",
}


def check(run, th: Thresholds) -> list[Finding]:
    frame = need(run, "grad_step", any_of=("zeroed", "altered"),
                 why="gradients compared at backward end and at optimizer.step")
    steps = steps_of(frame)
    observed = np.nan_to_num(col(frame, "steps"), nan=0.0)
    n = float(observed.sum())
    if n < 1:
        raise Unchecked("no optimizer step was observed after a backward")
    # records where non-finite gradients were sanitized: that alteration is nonfinite-grads'
    own = np.nan_to_num(col(frame, "sanitized"), nan=0.0) == 0
    share = {}
    masks = {}
    for key in CHANGES:
        fraction = np.nan_to_num(col(frame, key), nan=0.0)
        hit = own & (fraction > 0)
        masks[key] = hit
        share[key] = float((fraction * observed)[own].sum() / n)
    if not any(masks[k].any() for k in CHANGES):
        return []
    main = max(CHANGES, key=lambda k: share[k])
    hit = masks["zeroed"] | masks["replaced"] | masks["altered"]
    frac_zeroed = col(frame, "frac_zeroed")
    changes = events(run, "grad_step_change")
    evidence = {
        "steps": span(steps),
        "observed_steps": int(n),
        "zeroed_fraction": share["zeroed"],
        "replaced_fraction": share["replaced"],
        "altered_fraction": share["altered"],
        "altered_ranges": step_ranges(steps, hit),
        "first_step": min([int(e.get("first_step", e.get("step", 0))) for e in changes]
                          + [int(steps[hit][0])]),
        "median_frac_zeroed": float(np.nanmedian(frac_zeroed))
        if np.isfinite(frac_zeroed).any() else None,
        "events": len(changes),
    }
    world = world_size(run)
    lost = max(share["zeroed"], share["replaced"])
    title = (f"Gradients were {CHANGES[main]} between backward and optimizer.step on "
             f"{pct(share[main])} of {int(n)} observed steps")
    if world > 1:
        evidence["world_size"] = world
        return [Finding(
            ID, "info", title + f" (distributed run, world size {world})", evidence,
            "Under DistributedDataParallel the all-reduce replaces each gradient by the mean "
            "over ranks after backward, so a change is expected. If this rank's gradients "
            "were also zeroed or masked by the loop itself, remove that code.")]
    if _nothing_zeroed(share, frac_zeroed, main):
        down = _all_down(frame, observed, own, n, share)
        what = ("clipped per element or per tensor" if down else
                "changed per tensor or per element")
        return [Finding(
            ID, "info",
            f"Gradients were {what} between backward and optimizer.step on "
            f"{pct(share['altered'])} of {int(n)} observed steps "
            f"({'no tensor grew, ' if down else ''}no element was zeroed)", evidence,
            ("This is what clip_grad_value_ (or a per-tensor clip) does, expected if you "
             "clip on purpose. Clipping values changes the gradient's direction, which "
             "clip_grad_norm_ keeps; if it acts on most steps, the bound is tighter than the "
             "gradients' typical scale.") if down else
            ("Nothing was zeroed or masked: the loop rescaled or perturbed gradients on "
             "purpose — gradient noise injection, a per-layer scale, a hand-written "
             "preconditioner. If that is not intended, look for code touching .grad between "
             "backward() and step()."))]
    severity = "error" if lost >= th.grads_altered_error_fraction else "warning"
    return [Finding(
        ID, severity, title, evidence,
        "The optimizer applied different gradients from the ones backward produced. "
        "zero_grad() (or p.grad = None) between backward() and step() makes every update "
        "zero: clear gradients before backward, never between backward and step. A mask or "
        "a per-parameter rescale written by hand changes the update silently: freeze "
        "parameters with requires_grad_(False) or separate param groups instead, clip with "
        "clip_grad_norm_, and let a GradScaler unscale_ by itself.")]


def _nothing_zeroed(share: dict, frac_zeroed: np.ndarray, main: str) -> bool:
    """True when the alterations zeroed nothing: no step zeroed or replaced gradients and the
    elementwise samples saw no element zeroed (a mask zeroes elements, which the samples see
    on a mask applied every step); False otherwise, or without a sample to tell."""
    if main != "altered" or share["zeroed"] or share["replaced"]:
        return False
    sampled = frac_zeroed[np.isfinite(frac_zeroed)]
    return sampled.size > 0 and bool((sampled == 0).all())


def _all_down(frame, observed: np.ndarray, own: np.ndarray, n: float, share: dict) -> bool:
    """Every alteration only shrank tensors (`altered_down`): a value clip."""
    if "altered_down" not in frame:
        return False
    down = np.nan_to_num(col(frame, "altered_down"), nan=0.0)
    return float((down * observed)[own].sum() / n) >= share["altered"] - 1e-9
