"""stale-checkpoint: the best checkpoint was not updated when validation improved.

Reads `checkpoint` events of kind `best` (`metric`, `value`, optional `mode`: min|max)
against kind `eval` (the metric's logged values). An improvement (by more than
`checkpoint_tolerance`, relative) must be followed by a best save before the next
evaluation (unless it is smaller than the smallest improvement the loop did save: its own
min_delta); the last best.pt must hold the best value seen (to within that min_delta).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, events, frame_of, metric_direction, steps_of
from riswb.diagnose.text import fmt

ID = "stale-checkpoint"
_MIN_SAVES_FOR_A_BAR = 3  # saves after the first before the loop's own min_delta is read

FIX = (
    "best.pt is not rewritten when validation improves. Likely causes: the 'best so far' "
    "value is initialized and never reassigned (best_val never updated), compared with the "
    "wrong sign for the metric's direction, or the save sits in a branch that no longer "
    "runs. Update best_val whenever you save, and save the same weights you scored (best.pt "
    "once saved raw weights while selection scored EMA weights)."
)


def _mode(best: list[dict], metric: str) -> str:
    modes = {str(b.get("mode")).lower() for b in best if b.get("mode")}
    if modes & {"min", "max"}:
        return "max" if "max" in modes else "min"
    values = np.array([b.get("value") for b in best if isinstance(b.get("value"), (int, float))],
                      dtype=float)
    values = values[np.isfinite(values)]
    if len(values) >= 2 and np.ptp(values) > 0:
        d = np.diff(values)
        if np.all(d <= 0):
            return "min"
        if np.all(d >= 0):
            return "max"
    return "max" if metric_direction(metric) == "higher" else "min"


def check(run, th: Thresholds) -> list[Finding]:
    saves = events(run, "checkpoint")
    if not saves:
        raise Unchecked("no `checkpoint` events")
    best = [s for s in saves if s.get("kind") == "best"]
    if not best:
        raise Unchecked("checkpoint events include no `best` checkpoint")
    metrics = [str(b["metric"]) for b in best if b.get("metric")]
    metric = max(set(metrics), key=metrics.count) if metrics else "val_loss"
    ev = frame_of(run, "eval")
    if metric not in ev.columns:
        raise Unchecked(f"`eval` records lack the checkpoint metric '{metric}'")
    mode = _mode(best, metric)
    sign = 1.0 if mode == "min" else -1.0  # work with "lower is better"
    steps_all = steps_of(ev)
    raw = col(ev, metric)
    ok = np.isfinite(raw)
    if not ok.any():
        raise Unchecked(f"no finite values of '{metric}' in `eval`")
    steps, values = steps_all[ok], sign * raw[ok]
    prev_best = np.concatenate(([np.inf], np.minimum.accumulate(values)[:-1]))
    finite_prev = np.isfinite(prev_best)
    bar = np.full(len(values), np.inf)
    bar[finite_prev] = prev_best[finite_prev] - th.checkpoint_tolerance * np.maximum(
        np.abs(prev_best[finite_prev]), 1e-12)
    improved = values < bar

    best_steps = np.array(sorted(int(b.get("step", 0)) for b in best))
    next_eval = np.concatenate((steps[1:], [np.iinfo(np.int64).max]))
    idx = np.searchsorted(best_steps, steps, side="left")
    in_range = idx < len(best_steps)
    saved = in_range & (best_steps[np.minimum(idx, len(best_steps) - 1)] < next_eval)
    missed = improved & ~saved
    # the loop's own min_delta: it saves when a value beats ITS best (the last saved one) by
    # some margin; an improvement by less than the smallest margin it saved on is below
    # that bar (early stopping's min_delta), not a save it forgot
    last_saved = np.concatenate(([np.inf], np.where(saved, values, np.nan)[:-1]))
    last_saved = pd.Series(last_saved).ffill().to_numpy()
    margin = last_saved - values  # inf before the first save
    kept = margin[saved & np.isfinite(margin)]
    # a bar is read from a few saves at least: one save after two improvements says nothing
    own_bar = float(kept.min()) if kept.size >= _MIN_SAVES_FOR_A_BAR else 0.0
    below_own_bar = missed & (margin < own_bar)
    # and only when the loop showed it: an improvement below the bar left unsaved, then a
    # save after it (the branch still ran). A loop that saved every improvement until its
    # saves stopped has no bar, however its margins shrank
    later_save = np.flip(np.logical_or.accumulate(np.flip(saved)))
    later_save = np.concatenate((later_save[1:], [False]))
    if not (below_own_bar & later_save).any():
        own_bar, below_own_bar = 0.0, np.zeros_like(missed)
    missed &= ~below_own_bar

    findings: list[Finding] = []
    i_best = int(np.argmin(values))
    best_eval_value = float(sign * values[i_best])
    last_save = max(best, key=lambda b: int(b.get("step", 0)))
    last_save_step = int(last_save.get("step", 0))
    saved_value = last_save.get("value")
    if not isinstance(saved_value, (int, float)) or not np.isfinite(saved_value):
        at = np.flatnonzero(steps <= last_save_step)
        saved_value = float(sign * values[at[-1]]) if len(at) else None
    evidence = {
        "metric": metric,
        "mode": mode,
        "evaluations": int(ok.sum()),
        "improvements": int(improved.sum()),
        "best_saves": len(best),
        "missed_improvements": int(missed.sum()),
        "missed_steps": [int(s) for s in steps[missed][:10]],
        "below_own_min_delta": int(below_own_bar.sum()),
        "best_eval": {"step": int(steps[i_best]), "value": best_eval_value},
        "last_best_save": {"step": last_save_step, "value": saved_value},
        "checkpoint_tolerance": th.checkpoint_tolerance,
    }
    # the loop's own min_delta also excuses a final best.pt that trails the best value by
    # less than the smallest improvement it saved on
    stale = saved_value is not None and (
        sign * best_eval_value < sign * saved_value
        - max(th.checkpoint_tolerance * max(abs(saved_value), 1e-12), own_bar))
    if stale:
        findings.append(Finding(
            ID, "error",
            f"best.pt holds {metric}={fmt(saved_value)} (step {last_save_step}) but "
            f"validation reached {fmt(best_eval_value)} at step {int(steps[i_best])}",
            evidence, FIX))
    elif missed.any():
        findings.append(Finding(
            ID, "warning",
            f"{int(missed.sum())} of {int(improved.sum())} validation improvements were not "
            f"followed by a best.pt save (first at step {int(steps[missed][0])})",
            evidence, FIX))

    # best.pt scored a different value than eval logged at the same step (EMA vs raw).
    eval_at = dict(zip(steps_all[ok].tolist(), raw[ok].tolist(), strict=True))
    mismatched = []
    for b in best:
        step, value = int(b.get("step", 0)), b.get("value")
        if step in eval_at and isinstance(value, (int, float)) and np.isfinite(value):
            ref = eval_at[step]
            if abs(value - ref) > th.checkpoint_tolerance * max(abs(ref), 1e-12):
                mismatched.append({"step": step, "saved_value": value, "eval_value": ref})
    if mismatched:
        findings.append(Finding(
            ID, "warning",
            f"{len(mismatched)} best.pt save(s) record a {metric} different from the one "
            "validation logged at the same step",
            {"metric": metric, "mismatches": mismatched[:10]},
            "The checkpoint was scored on different weights than the ones evaluated (best.pt "
            "saved raw weights while selection scored EMA weights). Save exactly the weights "
            "that produced the logged metric."))
    return findings
