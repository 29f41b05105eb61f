"""grad-into-inputs: inputs or targets (e.g. R_samp) carry gradient or keep graphs alive.

Reads `grad_into_inputs` events (`tensors`: announced input/target tensors that required
grad and forward arguments whose graph reaches a model parameter, `count`; `leaf_tensors`:
forward arguments that were leaves requiring grad, or computed from such leaves only —
info only, as adversarial training, input-gradient penalties and physics-informed nets
do that on purpose) and kind `inputs` (`requires_grad`,
optionally `grad_fn`: counts of such tensors per logged step).
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    as_names,
    events,
    frame_of,
    hint,
    probe_listed,
    span,
    step_ranges,
    steps_of,
)

ID = "grad-into-inputs"


def check(run, th: Thresholds) -> list[Finding]:
    hits = events(run, "grad_into_inputs")
    inputs = frame_of(run, "inputs")
    if not hits and inputs.empty:
        if probe_listed(run, "inputs"):
            return []
        raise Unchecked("no `grad_into_inputs` events and no `inputs` records: whether inputs "
                        "or targets carried gradient could not be observed")
    tensors: list[str] = []
    leaves: list[str] = []
    count = 0
    evidence: dict = {}
    for hit in hits:
        for name in as_names(hit.get("tensors", hit.get("names"))):
            if name not in tensors:
                tensors.append(name)
        for name in as_names(hit.get("leaf_tensors")):
            if name not in leaves:
                leaves.append(name)
        c = hit.get("count")
        count += int(c) if isinstance(c, (int, float)) else len(as_names(hit.get("tensors")))
    if hits:
        evidence["events"] = len(hits)
        evidence["event_steps"] = span(np.array([int(h.get("step", 0)) for h in hits]))
        evidence["first_step"] = int(hits[0].get("first_step", hits[0].get("step", 0)))
    flagged = np.zeros(len(inputs), dtype=bool)
    if not inputs.empty:
        steps = steps_of(inputs)
        for name in ("requires_grad", "grad_fn"):
            values = col(inputs, name)
            mask = np.isfinite(values) & (values > 0)
            if mask.any():
                evidence[f"max_{name}"] = int(values[mask].max())
            flagged |= mask
        if flagged.any():
            evidence["input_steps"] = step_ranges(steps, flagged)
            evidence.setdefault("first_step", int(steps[flagged][0]))
            evidence["logged_steps_flagged"] = int(flagged.sum())
            evidence["logged_steps"] = len(inputs)
    if not tensors and not flagged.any():
        return _leaves_only(hits, leaves)
    evidence["tensors"] = tensors
    evidence["count"] = count
    named = ", ".join(tensors[:6]) if tensors else "input/target tensors"
    return [Finding(
        ID, "error",
        f"{named} required grad or carried a graph (first at step {evidence['first_step']})",
        evidence,
        f"Detach {named} where they enter the loss: gradients flowing into data keep "
        "every step's graph alive (memory grows, steps slow down)."
        + hint(run, " Here removing R_samp.detach() 'to let gradients flow' did that.")
        + " Build targets and baselines under "
        "torch.no_grad() or .detach() them, and never set requires_grad on data.",
    )]


def _leaves_only(hits: list[dict], leaves: list[str]) -> list[Finding]:
    """Forward arguments that were leaves requiring grad, and nothing on a graph: info."""
    if not leaves:
        return []
    first = min(int(h.get("first_step", h.get("step", 0))) for h in hits)
    return [Finding(
        ID, "info",
        f"Forward argument(s) {', '.join(leaves[:6])} required grad as (or computed from) "
        f"leaves of the loop's own (first at step {first})",
        {"leaf_tensors": leaves, "first_step": first, "events": len(hits),
         "leaf_count": sum(int(h.get("leaf_count", 0)) for h in hits)},
        "Adversarial training (FGSM, PGD), input-gradient penalties and physics-informed "
        "losses differentiate with respect to the input on purpose: nothing to do then. "
        "Otherwise the data pipeline "
        "creates tensors with requires_grad=True, and every backward computes their "
        "gradient for nothing.")]
