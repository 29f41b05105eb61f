"""dead-loss-term: a loss term that sends no gradient to any parameter.

Reads kind `loss_weight` (the weights actually used, written when they change: a weight 0 on
every record is a dead term, one scheduled through 0 is not, and a gradient sample taken
while the term's weight was 0 is left out), the `term_no_grad` event (a term with no path
to any parameter, known at wb.loss time), the `term_reach` event (terms the loop's own
backward did not go through: backward() called on one term instead of the total), kind
`term_grad` (‖∂(w·term)/∂θ‖ on front-loaded sampled steps), kind `term_grad_out` (zero at
the outputs too: no path at all, not a weight penalty), kind `loss` (term values), the
manifest's `loss_terms`, and the weights the config asked for (`config.weights`).
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col, value_columns
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    as_names,
    events,
    frame_of,
    hint,
    last_values,
    span,
    step_ranges,
    steps_of,
)
from riswb.diagnose.text import fmt, pct

ID = "dead-loss-term"


def _configured_weights(manifest: dict) -> dict[str, float]:
    """The weights the config asked for: `config.weights`, the key the reference trainer's
    TrainConfig (`[loss.weights]`) writes into the manifest; numbers only."""
    weights = (manifest.get("config") or {}).get("weights")
    if not isinstance(weights, dict):
        return {}
    return {str(k): float(v) for k, v in weights.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _no_path_terms(run) -> dict[str, int]:
    """Terms the loss saw with no path to any parameter (`term_no_grad`) -> first step."""
    out: dict[str, int] = {}
    for event in events(run, "term_no_grad"):
        for name in as_names(event.get("names")):
            out.setdefault(name, int(event.get("first_step", event.get("step", 0))))
    return out


def _zero_at_outputs(outputs, term: str, th: Thresholds) -> bool:
    """A zero gradient at the model's outputs on at least `min_term_samples` samples (with a
    zero parameter gradient: no path at all, not a weight penalty)."""
    values = col(outputs, term) if term in outputs.columns else np.array([])
    values = values[np.isfinite(values)]
    return len(values) >= th.min_term_samples and bool(np.all(values <= th.dead_term_grad))


def _dead_samples(run, term: str, gsteps, ok, no_grad, fraction: float, term_values,
                  weight) -> Finding:
    """The finding for a term whose sampled gradient is (nearly always) zero."""
    n = int(ok.sum())
    tv = term_values[np.isfinite(term_values)] if term_values is not None else np.array([])
    evidence = {
        "term": term,
        "steps": span(gsteps[ok]),
        "sampled_steps": n,
        "no_grad_fraction": fraction,
        "no_grad_ranges": step_ranges(gsteps, no_grad),
        "weight": weight,
    }
    if len(tv):
        evidence["median_value"] = float(np.median(tv))
    if len(tv) and np.all(tv == 0):
        cause = ("The term's value is itself 0 on every step: it is computed on the wrong "
                 "scale or units, or a hinge is satisfied from the start."
                 + hint(run, " Here angles already in radians converted with deg2rad again "
                        "once left the subspace and contrast terms silently 0."))
    else:
        value = (f"The term's value is non-zero (median {fmt(evidence['median_value'])}) but n"
                 if len(tv) else "N")
        cause = (f"{value}o gradient reaches the parameters: it is built from detached "
                 "tensors (.detach(), .item(), numpy, torch.no_grad) or only from targets.")
    return Finding(
        ID, "error" if fraction == 1 else "warning",
        f"Loss term '{term}' sends no gradient on {pct(fraction)} of {n} sampled steps",
        evidence,
        cause + " Check that every term has a non-zero gradient at initialization"
        + hint(run, " (riswb litmus)") + ".")


def check(run, th: Thresholds) -> list[Finding]:
    weights_frame = frame_of(run, "loss_weight")
    grads = frame_of(run, "term_grad")
    loss = frame_of(run, "loss")
    if weights_frame.empty and grads.empty and loss.empty:
        raise Unchecked("no `loss_weight`, `term_grad` or `loss` records")
    findings: list[Finding] = []
    weights = last_values(weights_frame, value_columns(weights_frame))
    configured = _configured_weights(run.manifest)

    if weights and all(w == 0 for w in weights.values()):
        findings.append(Finding(
            ID, "error", f"Every loss weight is 0 ({len(weights)} terms): the loss is 0",
            {"weights_used": weights, "weights_configured": configured or None},
            "The weights were never passed and defaulted to 0." + hint(
                run, " (The main weight lam_cov was never passed: the train loss printed "
                "0.000000 for days.)") + " Pass them explicitly and check the loss_weight "
            "records show the values you configured."))
        return findings

    # Weights the config asked for but the run did not use (constructor hard-coded them).
    mismatched = {
        t: {"configured": configured[t], "used": weights[t]}
        for t in configured
        if t in weights and not np.isclose(configured[t], weights[t], rtol=1e-6, atol=0)
    }
    if mismatched:
        zeroed = [t for t, m in mismatched.items() if m["used"] == 0 and m["configured"] != 0]
        findings.append(Finding(
            ID, "error" if zeroed else "warning",
            f"Loss weights used differ from the config for {', '.join(mismatched)}",
            {"terms": mismatched},
            "Config changes do not reach the loss: a constructor hard-codes the weights or "
            "reads them under another key. Pass the configured weights through to the loss "
            "and log the weights actually used (loss_weight)."))

    # 0 on every record: a weight scheduled through 0 (a KL warm-up from 0, an auxiliary
    # weight annealed to 0 by the end) is the loop's plan, not a dead term
    zero_weight = sorted(t for t, w in weights.items() if w == 0 and t not in mismatched
                         and _always_zero(weights_frame, t))
    if zero_weight:
        findings.append(Finding(
            ID, "warning",
            f"Loss term(s) {', '.join(zero_weight)} have weight 0: they contribute nothing",
            {"terms": zero_weight, "weights_used": weights},
            "If the term should train, its weight was never passed (a default of 0): set it "
            "explicitly. If it is an ablation, drop the term from the loss instead of "
            "computing it at weight 0."))

    silent = set(zero_weight) | set(mismatched)
    no_path = _no_path_terms(run)
    # no backward in the whole run: the gradients come from elsewhere (torch.func, a
    # hand-written update) and the logged loss only monitors; nothing is lost
    monitoring = _backward_calls(run) == 0
    for term, first in no_path.items():
        if term in silent:
            continue
        if monitoring:
            findings.append(Finding(
                ID, "info",
                f"Loss term '{term}' has no path to any parameter, in a run that never called "
                "backward (the loss is logged for monitoring)",
                {"term": term, "first_step": first, "backward_calls": 0},
                "The gradients are computed some other way (torch.func, a hand-written "
                "update), so a detached loss is fine; pass it as a Python number "
                "(loss.item()) to say it is a constant."))
            continue
        findings.append(Finding(
            ID, "error",
            f"Loss term '{term}' has no path to any parameter (seen at wb.loss, step {first})",
            {"term": term, "first_step": first, "weight": weights.get(term)},
            "The term passed to wb.loss() is not a tensor, or neither requires grad nor has a "
            "graph: it is built from detached tensors (.detach(), .item(), numpy, "
            "torch.no_grad) or from targets only, so it moves the logged loss and never the "
            "model. Compute it from the live outputs."))
    silent |= set(no_path)
    unreached = _not_backpropagated(run, silent)
    for term, (missed, checked, first) in unreached.items():
        findings.append(Finding(
            ID, "error" if missed == checked else "warning",
            f"Loss term '{term}' was not in the loop's backward on {missed} of {checked} "
            "checked steps",
            {"term": term, "missed": missed, "checked": checked, "first_step": first},
            "The loop called backward() on a tensor that does not include this term: a single "
            "term (ce.backward()), a stale variable, or a sum built before the term was "
            "added. wb.loss() returns the weighted total: backpropagate that (or "
            "scaler.scale(total)), or a sum that includes every term."))
    silent |= set(unreached)
    outputs = frame_of(run, "term_grad_out")
    if not grads.empty:
        gsteps = steps_of(grads)
        for term in value_columns(grads):
            if term in silent:
                continue
            values = col(grads, term)
            # samples taken while the term's weight was 0 (a warm-up from 0) say nothing
            ok = np.isfinite(values) & (_weight_at(weights_frame, term, gsteps) != 0)
            n = int(ok.sum())
            no_grad = ok & (values <= th.dead_term_grad)
            fraction = no_grad.sum() / n if n else 0.0
            if n >= th.min_term_samples:
                if fraction < th.dead_term_fraction:
                    continue
            elif not (n and fraction == 1 and _zero_at_outputs(outputs, term, th)):
                continue  # too few parameter samples, and the outputs do not settle it
            findings.append(_dead_samples(run, term, gsteps, ok, no_grad, fraction,
                                          col(loss, term) if term in loss.columns else None,
                                          weights.get(term)))

    # Terms the manifest declares but the loss never logged (key mismatch, docs/failures.md #7).
    declared = run.manifest.get("loss_terms") or []
    if declared and not loss.empty:
        logged = set(loss.columns)
        absent = [str(t) for t in declared if str(t) not in logged]
        if absent:
            findings.append(Finding(
                ID, "warning",
                f"Declared loss term(s) {', '.join(absent)} never appear in the logged loss",
                {"terms": absent, "declared": list(map(str, declared)),
                 "steps": span(steps_of(loss))},
                "The terms dict passed to wb.loss() lacks these keys: a key mismatch "
                "overwrote or dropped them. Build the terms dict in one place and compare its "
                "keys to the configured term names."))
    return findings


def _not_backpropagated(run, silent: set[str]) -> dict[str, tuple[int, int, int]]:
    """Terms the loop's backward did not go through on at least half of the checked cycles
    (event `term_reach`, at least `_MIN_REACH_CHECKS` of them): term -> (missed, checked,
    first step)."""
    found = events(run, "term_reach")
    if not found:
        return {}
    last = found[-1]
    checked, missed = last.get("checked") or {}, last.get("missed") or {}
    first = int(last["first_step"] if last.get("first_step") is not None
                else last.get("step", 0))
    out = {}
    for term, count in missed.items():
        total = int(checked.get(term, 0))
        if term not in silent and total >= _MIN_REACH_CHECKS and 2 * int(count) >= total:
            out[str(term)] = (int(count), total, first)
    return out


_MIN_REACH_CHECKS = 3


def _weight_series(weights_frame, term: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, weights) of the term's `loss_weight` records, finite weights only."""
    if weights_frame.empty or term not in weights_frame.columns:
        return np.array([]), np.array([])
    values = col(weights_frame, term)
    keep = np.isfinite(values)
    return steps_of(weights_frame)[keep], values[keep]


def _always_zero(weights_frame, term: str) -> bool:
    _, values = _weight_series(weights_frame, term)
    return bool(len(values)) and bool(np.all(values == 0))


def _weight_at(weights_frame, term: str, steps: np.ndarray) -> np.ndarray:
    """The term's weight in force at each of `steps` (the latest `loss_weight` record at or
    before it; written when the weights change), NaN where none is known."""
    record_steps, values = _weight_series(weights_frame, term)
    out = np.full(len(steps), np.nan)
    if len(values):
        at = np.searchsorted(record_steps, steps, side="right") - 1
        known = at >= 0
        out[known] = values[at[known]]
    return out


def _backward_calls(run) -> int | None:
    """Backward calls the run made (kind `cadence`, cumulative), None when not recorded."""
    cadence = frame_of(run, "cadence")
    if "backward" not in cadence.columns:
        return None
    values = col(cadence, "backward")
    values = values[np.isfinite(values)]
    return int(values[-1]) if len(values) else None
