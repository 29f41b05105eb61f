"""weights-swapped: parameters changed outside optimizer.step and were not restored.

Reads `weights_swapped` events (`kind`, `params_changed`, `restored`, `noop`). A swap that
was not restored is an error; a swap that changed nothing (noop) is a warning. The probe
writes no event for the loop's own edits (weight clipping, max-norm projections, SAM's
restore by subtraction): see riswb/probes/weight_swap.py for what counts as a swap.
"""

from __future__ import annotations

from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, events, probe_listed

ID = "weights-swapped"


def _summary(swaps: list[dict]) -> dict:
    return {
        "count": len(swaps),
        "steps": [int(s.get("step", 0)) for s in swaps[:10]],
        "kinds": sorted({str(s.get("kind", "?")) for s in swaps}),
        "params_changed": [s.get("params_changed") for s in swaps[:10]],
    }


def check(run, th: Thresholds) -> list[Finding]:
    swaps = events(run, "weights_swapped")
    if not swaps:
        if probe_listed(run, "weight_swap"):
            return []
        raise Unchecked("no `weights_swapped` events and no weight-swap probe listed in the "
                        "manifest: EMA/SWA swaps and reloads could not be observed")
    findings: list[Finding] = []
    unrestored = [s for s in swaps if s.get("restored") is False]
    noop = [s for s in swaps if s.get("noop") is True or (
        s.get("noop") is None and s.get("params_changed") == 0)]
    if unrestored:
        ev = _summary(unrestored)
        ev["swaps_total"] = len(swaps)
        findings.append(Finding(
            ID, "error",
            f"{len(unrestored)} of {len(swaps)} weight swaps ({', '.join(ev['kinds'])}) were "
            f"never swapped back (first at step {ev['steps'][0]})",
            ev,
            "Training continued from the swapped-in (EMA/SWA/reloaded) weights instead of "
            "the training weights, and Δparam measured after the EMA update looks tiny. Swap "
            "in a context manager that restores in `finally` (docs/design.md §9), or evaluate a "
            "separate copy of the averaged model instead of swapping."))
    if noop:
        ev = _summary(noop)
        ev["swaps_total"] = len(swaps)
        findings.append(Finding(
            ID, "warning",
            f"{len(noop)} weight swap(s) ({', '.join(ev['kinds'])}) changed no parameter: "
            "evaluation ran on the raw weights",
            ev,
            "The swap-in was a no-op. Likely cause: state-dict keys carry a 'module.' "
            "prefix (DataParallel/compile) and were loaded with strict=False, so nothing "
            "matched. Load with strict=True (or strip the prefix) and check the returned "
            "missing/unexpected keys."))
    return findings
