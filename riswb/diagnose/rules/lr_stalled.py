"""lr-stalled: learning rate at or near zero, or still warming up, for most of the run.

Reads kind `lr` (`group/<g>` per param group; `initial/<g>` when the probe records the
group's base lr — torch schedulers set it; without one, e.g. an lr decayed by hand, the
highest lr the group ran at stands for it) and, for context, kind `cadence`
(`scheduler_step`). An lr at or below `lr_near_zero_fraction` of that base counts as ~0.
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, frame_of, need, span, step_ranges, steps_of
from riswb.diagnose.text import fmt, pct

ID = "lr-stalled"

FIX_ZERO = (
    "With lr = 0 every update is zero whatever the gradients. Likely cause: a warm-up "
    "computed as step/warmup_steps from step 0 (lr = 0 at the start, and forever if its "
    "step counter never advances), or a group created with lr 0. Start the warm-up above "
    "zero (lr·(step+1)/warmup_steps), make sure scheduler.step() is called after each "
    "optimizer.step(), and print param_group['lr'] after the first step."
)
FIX_WARM = (
    "The schedule spends most of the run warming up, so training runs at a fraction of the "
    "intended lr. Likely cause: a per-batch schedule stepped once per epoch (it then kept the "
    "lr at half its target), or warmup_steps given in batches to a per-epoch scheduler. Step "
    "the scheduler at the unit its length is counted in, or shorten the warm-up."
)


def check(run, th: Thresholds) -> list[Finding]:
    lr = need(run, "lr", why="param_group lr per group")
    groups = [c for c in lr.columns if c.startswith("group/")]
    if not groups:
        groups = [c for c in lr.columns if c not in ("step", "opt_step", "time")
                  and not c.startswith("initial/")]
    if not groups:
        raise Unchecked("`lr` records hold no group/<g> columns")
    steps = steps_of(lr)
    cadence = frame_of(run, "cadence")
    sched = col(cadence, "scheduler_step")
    sched_steps = int(np.nanmax(sched)) if np.isfinite(sched).any() else None
    stalled: dict[str, dict] = {}
    warming: dict[str, dict] = {}
    starts_at_zero: dict[str, dict] = {}
    for name in groups:
        group = name[len("group/"):] if name.startswith("group/") else name
        values = col(lr, name)
        ok = np.isfinite(values)
        n = int(ok.sum())
        if n < 3:
            continue
        zero = ok & (values <= th.lr_min)
        initial = col(lr, f"initial/{group}")
        if not np.isfinite(initial).any():
            # no scheduler recorded a base lr (the loop sets param_group["lr"] by hand):
            # the highest lr the group ran at stands for it
            initial = np.full(len(values), np.nanmax(np.where(ok, values, np.nan)))
        zero |= ok & np.isfinite(initial) & (values <= th.lr_near_zero_fraction * initial)
        zero_fraction = zero.sum() / n
        v = values[ok]
        vs = steps[ok]
        peak = float(v.max())
        entry = {
            "steps": span(vs),
            "records": n,
            "first_lr": float(v[0]),
            "peak_lr": peak,
            "last_lr": float(v[-1]),
            "median_lr": float(np.median(v)),
            "zero_fraction": zero_fraction,
            "zero_ranges": step_ranges(steps, zero),
        }
        if zero_fraction >= th.lr_stall_fraction:
            stalled[group] = entry
            continue
        reached = v >= th.lr_peak_fraction * peak
        i_peak = int(np.argmax(reached))
        warm_fraction = i_peak / max(1, n - 1)
        if peak > th.lr_min and v[0] < th.lr_peak_fraction * peak \
                and warm_fraction >= th.lr_stall_fraction:
            entry["peak_reached_at_step"] = int(vs[i_peak])
            entry["warmup_fraction"] = warm_fraction
            warming[group] = entry
        elif zero[ok][0]:
            entry["zero_steps"] = int(zero.sum())
            starts_at_zero[group] = entry

    def evidence(entries: dict[str, dict]) -> dict:
        out = {"groups": entries, "lr_min": th.lr_min, "lr_stall_fraction": th.lr_stall_fraction,
               "steps": span(steps)}
        if sched_steps is not None:
            out["scheduler_steps"] = sched_steps
        return out

    findings: list[Finding] = []
    if stalled:
        worst = max(stalled.values(), key=lambda e: e["zero_fraction"])
        findings.append(Finding(
            ID, "error",
            f"lr of group(s) {', '.join(stalled)} is ~0 (≤ {fmt(th.lr_min)}, or ≤ "
            f"{pct(th.lr_near_zero_fraction)} of its base lr) on "
            f"{pct(worst['zero_fraction'])} of {worst['records']} logged steps "
            f"(peak {fmt(worst['peak_lr'])})",
            evidence(stalled), FIX_ZERO))
    if warming:
        worst = max(warming.values(), key=lambda e: e["warmup_fraction"])
        findings.append(Finding(
            ID, "warning",
            f"lr of group(s) {', '.join(warming)} is still warming up for "
            f"{pct(worst['warmup_fraction'])} of the run (peak {fmt(worst['peak_lr'])} reached "
            f"only at step {worst['peak_reached_at_step']})",
            evidence(warming), FIX_WARM))
    if starts_at_zero:
        findings.append(Finding(
            ID, "info",
            f"lr of group(s) {', '.join(starts_at_zero)} starts at 0: the first logged steps "
            "do nothing",
            evidence(starts_at_zero),
            "A warm-up that starts at exactly 0 wastes its first steps; start above zero, "
            "e.g. lr·(step+1)/warmup_steps."))
    return findings
