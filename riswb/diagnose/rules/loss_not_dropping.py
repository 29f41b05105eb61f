"""loss-not-dropping: the training loss does not fall.

Reads kind `loss` (`total`; when kind `loss_weight` shows the weights changed during the
run, a rebound is judged again on Σ w·term at the final weights, so a rise the schedule made
is not one) and, for the frozen-validation symptom, kind `eval`.
Start = median of the first `loss_window` finite records (or of the first five, or the first
record, when it stands 3σ above it: a fall within the first window); best = the lowest
rolling median of that window; end = median of the last window; σ = the per-record noise
from successive differences. Relative drop = (start - best)/|start|; a drop (or a rebound)
must also clear 4 standard errors of a window's median (1.25σ/√window each). A loss that
did not fall over fewer than `min_loss_steps` batches is info: too early to call; so is one
of a resumed run (manifest `first_step` > 0) that stays at its level, and one whose
`wb.evaluate` metric — of a name that tells its direction: an accuracy, a return, a
validation loss — clearly improved (a surrogate loss: policy gradient).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from riswb.diagnose.frames import col, value_columns
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    alternating_objectives,
    frame_of,
    hint,
    last_values,
    metric_direction,
    need,
    span,
    steps_of,
)
from riswb.diagnose.text import fmt, pct

ID = "loss-not-dropping"

FIX = (
    "The model is not learning. This is the symptom; look at the findings ranked above it "
    "first. Known causes: optimizer.step() once per epoch instead of per batch "
    "(step-cadence), lr stuck at 0 in warm-up (lr-stalled), skipped steps (step-skipped), "
    "a main loss weight that defaulted to 0 (dead-loss-term), or loss scaling left inside a "
    "debug-only `if` block. Confirm the loop can overfit a few hundred samples{how}."
)


def check(run, th: Thresholds) -> list[Finding]:
    frame = need(run, "loss", any_of=("total",), why="wb.loss() records the loss terms")
    steps, total = steps_of(frame), col(frame, "total")
    finite = np.isfinite(total)
    values, vsteps = total[finite], steps[finite]
    n = len(values)
    if n < th.min_loss_records:
        raise Unchecked(f"only {n} finite loss records (need {th.min_loss_records} for a trend)")
    objectives = alternating_objectives(frame, finite)
    rescored = _at_final_weights(run, frame)
    findings = [] if objectives else _trend(
        run, values, vsteps, th, None if rescored is None else rescored[finite])
    if not objectives and not findings:
        findings += _fall_bought_by_negative_terms(run, frame, th)
    findings += _frozen_eval(run)
    if objectives and not findings:
        raise Unchecked(f"the loss alternates between {len(objectives)} objectives "
                        f"({'; '.join(objectives[:3])}), e.g. a GAN's discriminator and "
                        "generator: their sum need not fall")
    return findings


def _at_final_weights(run, frame: pd.DataFrame) -> np.ndarray | None:
    """Σ w·term per record at the run's final weights, when the loss weights changed during
    the run (a KL warm-up, an annealed auxiliary term): a weighted total that gains a term
    halfway rises with the schedule, not because training went wrong. None when the weights
    never changed or the records lack a term's value."""
    weights = frame_of(run, "loss_weight")
    names = value_columns(weights)
    if len(weights) < 2 or not any(
            len(np.unique(v[np.isfinite(v)])) > 1 for v in (col(weights, t) for t in names)):
        return None
    final = last_values(weights, names)
    terms = [t for t in value_columns(frame) if t != "total"]
    if not terms or any(t not in final for t in terms):
        return None
    return sum(final[t] * col(frame, t) for t in terms)


_MIN_EVALUATIONS = 6  # a first and a last third of two evaluations each, at least
_TREND_Z = 3.0  # a Mann–Kendall z at or below −this is a fall, whatever a window's noise
_TREND_MAX = 400  # records the trend test reads (evenly spaced beyond that)


def _trend_z(values: np.ndarray) -> float:
    """Mann–Kendall z of the whole series (negative: falling): the sign of every later-minus-
    earlier pair, so a steady fall through heavy noise counts, which the median of a short
    window misses; its standard error shrinks with the number of records."""
    if len(values) > _TREND_MAX:
        values = values[np.linspace(0, len(values) - 1, _TREND_MAX).astype(int)]
    n = len(values)
    if n < 4:
        return 0.0
    s = float(np.sign(values[None, :] - values[:, None])[np.triu_indices(n, 1)].sum())
    sd = np.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    return (s - np.sign(s)) / sd  # continuity correction


def _first_update_blew_up(run) -> dict | None:
    """The very first update at least as big as the (non-zero) weights it started from,
    ‖Δθ‖/‖θ‖ ≥ 1 at optimizer step 1 (kind `param_update`, which samples it): an lr far too
    high, whose first records then show the blow-up, not the starting loss. (A model grown
    from a zero init reads an infinite ratio there, and ~1 on the next steps: not this.)"""
    updates = frame_of(run, "param_update")
    if "ratio" not in updates.columns or "opt_step" not in updates.columns:
        return None
    ratio, opt_step = col(updates, "ratio"), col(updates, "opt_step")
    first = np.isfinite(ratio) & (opt_step == 1)
    if not first.any() or ratio[first].max() < 1:
        return None
    return {"update_ratio": float(ratio[first].max()), "opt_step": 1}


def _trend(run, values: np.ndarray, vsteps: np.ndarray, th: Thresholds,
           rescored: np.ndarray | None = None) -> list[Finding]:
    """Constant, not falling, or rebounding: the total loss of one objective. `rescored`:
    the same records at the final loss weights, when they changed during the run; a rise
    that the schedule made (a term's weight going up) is not a rebound."""
    n = len(values)
    findings: list[Finding] = []
    fix = FIX.format(how=hint(run, " (`riswb overfit`)"))
    window = int(max(3, min(th.loss_window, n // 5)))
    # per-record noise (robust, from successive differences): a drop or a rebound must
    # stand out of it, so a noisy minibatch loss is judged by its trend, not its jitter
    noise = _noise(values)
    clear = _clear_of(noise, window)
    # the first window's median, or the first few records' median or the first record
    # when it stands out of the noise (its own 3σ, σ/√m for a median of m): a loss that
    # falls within the first window must not read as "started low", and a noisy start must
    # not read as a drop
    start = float(np.median(values[:window]))
    blowup = _first_update_blew_up(run)
    for value, m in ((np.median(values[:min(5, window)]), min(5, window)), (values[0], 1)):
        if value - start > 3 * 1.25 * noise / np.sqrt(m):
            if blowup is not None:
                # the first steps moved the weights by more than their own size: the high
                # first records are that blow-up, not where the model started from
                start = float(np.median(values[1:window + 1]))
                break
            start = float(max(start, value))
    end = float(np.median(values[-window:]))
    rolling = pd.Series(values).rolling(window).median().to_numpy()[window - 1:]
    best_i = int(np.nanargmin(rolling))
    best = float(rolling[best_i])
    best_step = int(vsteps[window - 1 + best_i])
    evidence = {
        "steps": span(vsteps),
        "records": n,
        "window": window,
        **({"first_update_blew_up": blowup} if blowup is not None else {}),
        "start": start,
        "best": best,
        "best_at_step": best_step,
        "end": end,
        "noise": noise,
    }
    if np.ptp(values) == 0:
        evidence["constant_value"] = float(values[0])
        if values[0] == 0:
            findings.append(Finding(
                ID, "error", f"The total loss is exactly 0 on all {n} logged steps",
                evidence,
                "A loss of exactly 0 sends no gradient. Likely cause: the main loss weight "
                "was never passed and defaulted to 0, or a constructor hard-coded weights "
                "that config changes never reach (see dead-loss-term and the loss_weight "
                "records for the weights actually used)."))
        else:
            findings.append(Finding(
                ID, "error", f"The total loss is constant at {fmt(float(values[0]))} on all "
                f"{n} logged steps", evidence, fix))
    else:
        denom = max(abs(start), 1e-12)
        drop = (start - best) / denom
        evidence["relative_drop"] = drop
        evidence["min_loss_drop"] = th.min_loss_drop
        # the best of many rolling windows sits ~2 standard errors below a flat level by
        # chance: a real drop also clears 4 standard errors of a window's median
        within_noise = start - best <= clear
        # a fall not clear of a short window's noise still counts when the series as a
        # whole falls significantly (a noisy loss on a high floor: diffusion, RL)
        trend = _trend_z(values) if within_noise else None
        if trend is not None:
            evidence["trend_z"] = trend
        if drop < th.min_loss_drop or (within_noise and trend > -_TREND_Z):
            verb = "rose" if end > start else "did not fall"
            # a short run of a correct loop may not have moved the loss yet (a warm-up, a
            # hard task): too early to call it broken
            batches = int(vsteps[-1] - vsteps[0] + 1)
            early = batches < th.min_loss_steps
            evidence["batches"] = batches
            # a resumed run starts trained: a loss at its floor need not fall (one that
            # climbs clear of its noise still counts: a resume that lost the optimizer state)
            resumed = int(run.manifest.get("first_step") or 0)
            climbing = end - start > clear
            if resumed and not climbing:
                evidence["resumed_at_step"] = resumed
            improved = _evaluation_improved(run)
            if improved is not None:
                evidence["evaluation_improved"] = improved
            blew = (f"; the first updates blew up (‖Δθ‖/‖θ‖ = {fmt(blowup['update_ratio'])} at "
                    f"optimizer step {blowup['opt_step']})" if blowup is not None else "")
            why = (f"; only {batches} batches, too early to call" if early
                   else f"; a run resumed at step {resumed}, already trained" if (
                       resumed and not climbing)
                   else f"; but '{improved['metric']}' improved from {fmt(improved['first'])} "
                        f"to {fmt(improved['last'])}: the loss is a surrogate" if improved
                   else "")
            findings.append(Finding(
                ID, "info" if why else "error",
                f"The training loss {verb}: {fmt(start)} at the start, best {fmt(best)}, "
                f"{fmt(end)} at the end ({pct(max(drop, 0))} drop over {n} records)"
                + why + blew,
                evidence,
                ("An update bigger than the weights themselves is a learning rate far too "
                 "high: the model jumped away from its initialization and settled where it "
                 "learns nothing (often the loss of a constant prediction). Lower the lr (by "
                 "10× or more), or add a warm-up. " if blowup is not None else "") + fix))
        else:
            gain = start - best
            rebound = (end - best) / gain if gain > 0 else 0.0
            # the best rolling median is biased low by the noise: a real rise clears it
            if rebound > th.max_loss_rebound and rescored is not None:
                # judged again at fixed weights: from the best window to the last one
                fixed = pd.Series(rescored).rolling(window).median().to_numpy()[window - 1:]
                if not fixed[-1] > fixed[best_i]:
                    rebound = 0.0
                    evidence["judged_at"] = "the final loss weights (they changed in the run)"
            if rebound > th.max_loss_rebound and \
                    end - best > clear:
                evidence["rebound_fraction"] = rebound
                # a surrogate's rise, not a divergence, when an evaluation improved and is
                # at its best at the end
                improved = _evaluation_improved(run)
                surrogate = improved is not None and improved["at_best"]
                if surrogate:
                    evidence["evaluation_improved"] = improved
                findings.append(Finding(
                    ID, "info" if surrogate else "warning",
                    f"The training loss fell to {fmt(best)} by step {best_step}, then rose "
                    f"back to {fmt(end)} (gave back {pct(rebound)} of its gain)"
                    + (f"; but '{improved['metric']}' improved to {fmt(improved['last'])}, "
                       "its best: the loss is a surrogate" if surrogate else ""),
                    evidence,
                    "Training diverges after a good start: lower the peak lr or lengthen the "
                    "decay, check for non-finite gradients that sanitization hides "
                    "(nonfinite-grads), and check that EMA/SWA swaps restore the training "
                    "weights (weights-swapped)."))
    return findings


def _noise(values: np.ndarray) -> float:
    """The per-record noise σ of a loss series, robust, from successive differences."""
    return float(1.4826 * np.median(np.abs(np.diff(values))) / np.sqrt(2))


def _clear_of(noise: float, window: int) -> float:
    """The least change between two windows' medians that stands out of the noise: 4
    standard errors of a window's median (1.25σ/√window each)."""
    return 4 * 1.25 * noise / np.sqrt(window)


def _fall_bought_by_negative_terms(run, frame: pd.DataFrame, th: Thresholds) -> list[Finding]:
    """A total that keeps falling only because a negatively weighted term grows tenfold or
    more, and still grows at the end, while the positively weighted part climbs back from its
    best: the optimizer maximizes that term, a sign typo (an L1 penalty at −λ) unbounded
    below. A bounded bonus (an entropy bonus, a flow's log-determinant) levels off; weights
    that change during the run are left alone."""
    weights = frame_of(run, "loss_weight")
    names = [t for t in value_columns(weights) if t in frame.columns]
    if not names or any(len(np.unique(v[np.isfinite(v)])) > 1
                        for v in (col(weights, t) for t in names)):
        return []
    final = last_values(weights, names)
    negative = [t for t in names if final[t] < 0]
    positive = [t for t in names if final[t] > 0]
    if not negative or not positive:
        return []
    part = sum(final[t] * col(frame, t) for t in positive)
    total = col(frame, "total")
    ok = np.isfinite(part) & np.isfinite(total)
    if ok.sum() < th.min_loss_records:
        return []
    part, total, steps = part[ok], total[ok], steps_of(frame)[ok]
    window = int(max(3, min(th.loss_window, len(part) // 5)))

    def rolling(values: np.ndarray) -> np.ndarray:
        return pd.Series(values).rolling(window).median().to_numpy()[window - 1:]

    part_rolling, total_rolling = rolling(part), rolling(total)
    best = int(np.nanargmin(part_rolling))  # from the positive part's best window on
    rise = part_rolling[-1] - part_rolling[best]
    # the other terms got clearly worse: out of the noise, and by a tenth of their best
    if not (rise > _clear_of(_noise(part), window) and rise > 0.1 * abs(part_rolling[best])
            and total_rolling[best] - total_rolling[-1] > _clear_of(_noise(total), window)):
        return []
    # still running away at the end: over the last quarter of the span, the total still
    # falls clear of its noise and the term still grows (a term that rose from near 0 and
    # levelled off, a flow's log-determinant, is bounded after all)
    late = best + 3 * (len(part_rolling) - 1 - best) // 4
    if not total_rolling[late] - total_rolling[-1] > _clear_of(_noise(total), window):
        return []
    grown = {}
    for term in negative:
        size = rolling(np.abs(col(frame, term)[ok]))
        if size[-1] >= 10 * max(size[best], 1e-12) and size[-1] >= 1.2 * size[late]:
            grown[term] = {"weight": final[term], "from": float(size[best]),
                           "to": float(size[-1])}
    if not grown:
        return []
    described = ", ".join(f"'{t}' (weight {fmt(g['weight'])}: {fmt(g['from'])} → "
                          f"{fmt(g['to'])})" for t, g in grown.items())
    since = int(steps[window - 1 + best])
    return [Finding(
        ID, "warning",
        f"Since step {since} the total loss falls ({fmt(total_rolling[best])} → "
        f"{fmt(total_rolling[-1])}) only because {described} grows, while the positively "
        f"weighted terms rose ({fmt(part_rolling[best])} → {fmt(part_rolling[-1])})",
        {"steps": span(steps), "since_step": since, "window": window, "grown": grown,
         "positive_terms": positive,
         "positive_part": {"best": float(part_rolling[best]), "end": float(part_rolling[-1])},
         "total": {"then": float(total_rolling[best]), "end": float(total_rolling[-1])}},
        "A term with a negative weight is maximized, and this one has no bound: the optimizer "
        "buys the falling total by inflating it while the terms that matter get worse. A "
        "sign typo in the weight (a penalty written as −λ) is the usual cause; if the term "
        "is meant to be maximized, bound it (a saturating function, a clamp, or a target "
        "value) so it cannot run away.")]


def _evaluation_improved(run) -> dict | None:
    """A `wb.evaluate` metric whose name tells its direction and whose last third of
    evaluations moved that way from its first third (medians) by more than 10% of the first
    and clear of its own noise: the model learns, whatever its training loss does (a
    policy-gradient surrogate with normalized advantages averages 0 on every batch; an
    entropy bonus pulls it up as the policy sharpens). None when no such metric improved."""
    ev = frame_of(run, "eval")
    if len(ev) < _MIN_EVALUATIONS:
        return None
    for name in value_columns(ev):
        direction = metric_direction(name)
        if direction is None:
            continue
        metric = col(ev, name)
        values = metric[np.isfinite(metric)]
        if len(values) < _MIN_EVALUATIONS:
            continue
        k = len(values) // 3
        first, last = float(np.median(values[:k])), float(np.median(values[-k:]))
        gain = (first - last) if direction == "lower" else (last - first)
        clear = _clear_of(_noise(values), k)
        if gain > 0.1 * abs(first) and gain > clear:
            best = float(values.min() if direction == "lower" else values.max())
            return {"metric": name, "first": first, "last": last, "evaluations": len(values),
                    # the last evaluations within the noise of the best: still improving
                    "at_best": abs(best - last) <= clear}
    return None


def _own_weights_moved(run, first: int, last: int) -> bool:
    """Whether every evaluation ran the watched model's own forwards (kind `mode`,
    `evals_own`: not a separate EMA/SWA copy, which a stale swap would leave frozen) and its
    weights moved between `first` and `last` (kind `param_update`: a sampled step there with
    an update)."""
    mode = frame_of(run, "mode")
    if "evals_own" not in mode.columns:
        return False
    evals, own = (np.nansum(col(mode, c)) for c in ("evals", "evals_own"))
    updates = frame_of(run, "param_update")
    if not evals or own < evals or "ratio" not in updates.columns:
        return False
    usteps, ratio = steps_of(updates), col(updates, "ratio")
    between = (usteps > first) & (usteps <= last) & np.isfinite(ratio)
    return bool(between.any() and ratio[between].max() > 0)


def _frozen_eval(run) -> list[Finding]:
    """A validation metric frozen at one value (docs/failures.md #1): the evaluated weights
    never changed. Not when another metric of the same evaluations moved (the weights did:
    an accuracy can sit at 1.0 while they change), nor for a lone metric at exactly 0 or 1,
    a rate at its bound, which says nothing about the weights; info (saturated) when the
    trained model itself was evaluated and its weights moved in between."""
    findings: list[Finding] = []
    ev = frame_of(run, "eval")
    if len(ev) >= 3:
        frozen = []
        for name in value_columns(ev):
            metric = col(ev, name)
            ok = np.isfinite(metric)
            if ok.sum() < 3:
                continue
            if np.ptp(metric[ok]) != 0:
                return []
            frozen.append((name, metric, ok))
        for name, metric, ok in frozen:
            if float(metric[ok][0]) not in (0.0, 1.0):
                estep = steps_of(ev)[ok]
                if _own_weights_moved(run, int(estep[0]), int(estep[-1])):
                    findings.append(Finding(
                        ID, "info",
                        f"Validation metric '{name}' stayed at {fmt(float(metric[ok][0]))} "
                        f"over {int(ok.sum())} evaluations of the trained model itself, "
                        "whose weights changed in between: saturated",
                        {"metric": name, "value": float(metric[ok][0]),
                         "evaluations": int(ok.sum()), "steps": span(estep)},
                        "A metric with few values it can take (an accuracy on a small "
                        "held-out set) stops moving once the model is good enough. Use a "
                        "finer metric (the validation loss) to follow progress."))
                    break
                findings.append(Finding(
                    ID, "warning",
                    f"Validation metric '{name}' is frozen at {fmt(float(metric[ok][0]))} "
                    f"over {int(ok.sum())} evaluations",
                    {"metric": name, "value": float(metric[ok][0]),
                     "evaluations": int(ok.sum()), "steps": span(steps_of(ev)[ok])},
                    "A validation metric that never changes means the evaluated weights never "
                    "change: optimizer.step() running once per epoch on the last batch "
                    "(step-cadence), a zero lr (lr-stalled), or evaluation of a stale copy "
                    "of the model (weights-swapped)."))
                break
    return findings
