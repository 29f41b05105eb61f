"""params-not-moving: Δparam is zero (relative to ‖param‖) on most optimizer steps.

Reads kind `param_update` (`ratio`, `frac_moving`, `group/<g>/ratio`), measured at
optimizer.step (after an EMA update Δparam looks tiny: docs/failures.md #19), and the
`coverage` / `dead_params` events that explain idle tensors. A group's ratio is NaN while
none of its tensors requires grad (frozen on purpose, e.g. before gradual unfreezing): those
steps are not counted as steps it did not move.
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    as_names,
    converged_closure_steps,
    events,
    frame_of,
    need,
    never_gradient,
    span,
    step_ranges,
    steps_of,
    totals,
    zero_gradient_updates,
)
from riswb.diagnose.text import pct

ID = "params-not-moving"

FIX = (
    "The parameters do not change at optimizer.step(). Check, in this order: the learning "
    "rate (lr-stalled: a warm-up computed as step/warmup_steps from step 0 keeps lr at 0), "
    "skipped steps (step-skipped: GradScaler overflow, or a step gate that requires every "
    "gradient norm > 0 and skips valid steps), whether the optimizer holds the model's "
    "parameters (optimizer-coverage) and whether gradients arrive at all (dead-params). "
    "Measure Δparam at optimizer.step, not after an EMA update."
)


FIX_NO_BACKWARD = (
    "No backward ever reached a trainable tensor, so every step applied nothing. "
    "loss.backward() ran on a tensor outside the model's graph: a loss rebuilt from a "
    "Python number (torch.tensor(loss.item(), requires_grad=True)), a .detach()ed total, or "
    "one computed under torch.no_grad(). Call backward on the tensor wb.loss returns (or "
    "on the sum of the terms as computed from the model's outputs)."
)


def _backwards(run) -> tuple[float, float] | None:
    """(backwards that reached a trainable tensor, optimizer steps), from the run's last
    `cadence` record; None without one."""
    counts = totals(frame_of(run, "cadence"), ("backward", "optimizer_step"), cumulative=True)
    return (counts["backward"], counts["optimizer_step"]) if counts["optimizer_step"] else None


def _idle_explained(run) -> list[str]:
    """Records that say why tensors stay still: tensors in no optimizer or in an lr-0 group
    (`coverage`), or without gradient (`dead_params`) — leaving out the tensors frozen in
    effect (in no optimizer, never a gradient: a KD teacher under no_grad), which explain
    themselves and are nothing to warn about."""
    frozen = never_gradient(run) or set()
    found = []
    for event in events(run, "coverage"):
        for key in ("missing", "zero_lr_groups"):
            names = [n for n in as_names(event.get(key)) if key != "missing" or n not in frozen]
            if names and f"coverage.{key}" not in found:
                found.append(f"coverage.{key}")
    if any(n not in frozen for e in events(run, "dead_params") for n in as_names(e.get("names"))):
        found.append("dead_params")
    return found


def check(run, th: Thresholds) -> list[Finding]:
    frame = need(run, "param_update", any_of=("ratio", "frac_moving"),
                 why="Δparam is recorded at optimizer.step by the param_update probe")
    steps = steps_of(frame)
    ratio, frac = col(frame, "ratio"), col(frame, "frac_moving")
    valid = np.isfinite(ratio) | np.isfinite(frac)
    n = int(valid.sum())
    if n == 0:
        raise Unchecked("`param_update` records hold no finite ratio or frac_moving")
    still = valid & ((frac <= 0) | (ratio <= th.min_update_ratio))
    # a closure optimizer (LBFGS) returns without moving once its own tolerance is met
    converged = converged_closure_steps(run, steps, still)
    still &= ~converged
    n_still = int(still.sum())
    still_fraction = n_still / n
    findings: list[Finding] = []
    evidence = {
        "steps": span(steps[valid]),
        "logged_updates": n,
        "still_updates": n_still,
        "still_fraction": still_fraction,
        "still_ranges": step_ranges(steps, still),
        "median_ratio": float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else None,
        "min_update_ratio": th.min_update_ratio,
        "converged_closure_steps": int(converged.sum()),
    }
    if 1 - still_fraction < th.min_moving_fraction:
        counted = _backwards(run)
        unreached = counted is not None and counted[0] == 0
        if unreached:
            evidence["cadence"] = {"backward": 0, "optimizer_step": int(counted[1])}
        findings.append(Finding(
            ID, "error",
            f"Parameters did not move on {pct(still_fraction)} of optimizer steps "
            f"({n_still} of {n})" + (f": no backward reached the model in "
                                     f"{int(counted[1])} optimizer steps" if unreached else ""),
            evidence, FIX_NO_BACKWARD if unreached else FIX))
    elif int((still & ~zero_gradient_updates(frame)).sum()) / n > th.max_still_fraction:
        # a step whose gradient was 0 (a satisfied hinge) had nothing to apply
        findings.append(Finding(
            ID, "warning",
            f"Parameters did not move on {pct(still_fraction)} of optimizer steps",
            evidence, FIX))

    # Per param group: a whole group frozen while the others move (docs/failures.md #6).
    if not findings:
        for name in [c for c in frame.columns if c.startswith("group/") and c.endswith("/ratio")]:
            group = name[len("group/"):-len("/ratio")]
            values = col(frame, name)
            ok = np.isfinite(values)
            if ok.sum() == 0:
                continue
            g_still = ok & (values <= th.min_update_ratio)
            g_fraction = g_still.sum() / ok.sum()
            if 1 - g_fraction < th.min_moving_fraction:
                findings.append(Finding(
                    ID, "error" if g_fraction == 1 else "warning",
                    f"Param group '{group}' did not move on {pct(g_fraction)} of optimizer "
                    "steps while the others did",
                    {"group": group, "steps": span(steps[ok]), "still_fraction": g_fraction,
                     "still_ranges": step_ranges(steps, g_still),
                     "median_group_ratio": float(np.nanmedian(values))},
                    f"Group '{group}' gets no update: its lr may be 0 (lr-stalled) or its "
                    "parameters get no gradient (dead-params). Check which modules went into "
                    "it (optimizer-coverage: parameters of new heads that matched no name in "
                    "the group list trained at the wrong lr or not at all)."))

    # Part of the model frozen on every step (docs/failures.md #7, 18).
    moving = valid & ~still & np.isfinite(frac)
    if moving.any():
        median_frac = float(np.median(frac[moving]))
        if median_frac < th.min_tensor_moving_fraction:
            explained = _idle_explained(run)
            frozen = sorted(never_gradient(run) or ())
            findings.append(Finding(
                ID, "warning" if explained else "info",
                f"Only {pct(median_frac)} of trainable tensors change per optimizer step",
                {"steps": span(steps[moving]), "median_frac_moving": median_frac,
                 "min_tensor_moving_fraction": th.min_tensor_moving_fraction,
                 "explained_by": explained or None},
                "Some trainable tensors never change: they receive no gradient or sit in a "
                "group with lr 0. See dead-params and optimizer-coverage for their names; "
                "freeze intentionally idle modules with requires_grad_(False)." if explained
                else f"The idle tensors include {len(frozen)} that require grad but never get "
                "one and are in no optimizer (frozen in effect, e.g. a teacher run under "
                "torch.no_grad): harmless; requires_grad_(False) says so." if frozen
                else "Some trainable tensors change by less than float32 resolves, although "
                "every tensor is in the optimizer and none is dead: their gradient is "
                "tiny, not absent — typically a bias right before a BatchNorm, which the "
                "normalization cancels (harmless; bias=False saves it)."))
    return findings
