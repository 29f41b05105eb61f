"""dead-params: trainable params whose gradient stays None or zero.

Reads `dead_params` events (`names`, `steps`: the dead set, written when it changes), kind
`dead` (`n_dead`, `frac_dead_elems`) and kind `grad_norm` (`module/<name>`: a top-level
module whose gradient norm is zero on every logged step is dead too).
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
    last_values,
    names_summary,
    never_gradient,
    span,
    steps_of,
)
from riswb.diagnose.text import pct

ID = "dead-params"

FIX = (
    "These parameters get no gradient: their outputs never reach the loss. Likely causes: "
    "a head whose output is overwritten or dropped before the loss (a dict-key mismatch{story}"
    "), a term that "
    "goes through .detach()/.item()/numpy, or an argmax/clamp that blocks the gradient. "
    "Trace one batch: check out[name].requires_grad and grad_fn for each head; remove "
    "unused modules or freeze them with requires_grad_(False)."
)


FIX_GATED = (
    "{names}: the rest of its module gets gradients, so the module's output does reach the "
    "loss and the gradient stops at this tensor: a hook or mask that zeroes it "
    "(p.register_hook(lambda g: g * mask) with an all-zero mask), or, for a weight, inputs "
    "that are always zero (dead units upstream, a zeroed feature). Otherwise:"
)


def check(run, th: Thresholds) -> list[Finding]:
    changes = events(run, "dead_params")
    dead = frame_of(run, "dead")
    grads = frame_of(run, "grad_norm")
    module_cols = [c for c in grads.columns if c.startswith("module/")]
    if not changes and dead.empty and not module_cols:
        raise Unchecked("no `dead_params` events, `dead` records or per-module `grad_norm`")
    findings: list[Finding] = []

    names: list[str] = []
    since: dict[str, int] = {}
    window = None
    gated: set[str] = set()
    for change in changes:  # few events: one per change of the dead set
        current = set(as_names(change.get("names")))
        gated = set(as_names(change.get("gated")))
        for name in current:
            since.setdefault(name, int(change.get("step", 0)))
        for name in list(since):
            if name not in current:
                del since[name]
        names = sorted(current)
        window = change.get("steps", window)

    # tensors in no optimizer that never got a gradient are frozen in effect (a KD teacher
    # run under no_grad without requires_grad_(False)): optimizer-coverage's info, not dead
    frozen = never_gradient(run) or set()
    frozen_dead = [n for n in names if n in frozen]
    names = [n for n in names if n not in frozen]
    frozen_modules = {n.split(".", 1)[0] for n in frozen_dead if "." in n}

    n_dead_last = frac_last = None
    steps_dead: list[int] = []
    if not dead.empty:
        n_dead = col(dead, "n_dead")
        frac = col(dead, "frac_dead_elems")
        dsteps = steps_of(dead)
        ok = np.isfinite(n_dead)
        if ok.any():
            n_dead_last = max(0, int(n_dead[ok][-1]) - len(frozen_dead))
            steps_dead = span(dsteps[ok & (n_dead > 0)])
        okf = np.isfinite(frac)
        if okf.any():
            frac_last = float(frac[okf][-1])
    module_dead = {  # per-module fraction of elements that never got a gradient
        c[len("dead_frac/"):]: v
        for c, v in last_values(dead, [c for c in dead.columns if c.startswith("dead_frac/")])
        .items()
    } if not dead.empty else {}
    if frozen_dead:  # their elements are in the totals: judge by the other modules only
        module_dead = {m: v for m, v in module_dead.items() if m not in frozen_modules}
        frac_last = None

    dead_modules = []
    if module_cols and len(grads) >= th.min_term_samples:
        gsteps = steps_of(grads)
        for name in module_cols:
            values = col(grads, name)
            ok = np.isfinite(values)
            module = name[len("module/"):]
            if module in frozen_modules:
                continue  # the frozen-in-effect tensors' module
            if ok.sum() >= th.min_term_samples and np.all(values[ok] <= 0):
                dead_modules.append({"module": module,
                                     "steps": span(gsteps[ok])})

    if names or (n_dead_last or 0) > 0 or dead_modules:
        evidence: dict = {}
        if names:
            evidence["params"] = names_summary(names)
            evidence["dead_since_step"] = {n: since[n] for n in names[:20] if n in since}
        if window is not None:
            evidence["window_steps"] = window
        if n_dead_last is not None:
            evidence["n_dead"] = n_dead_last
            evidence["steps"] = steps_dead
        if frac_last is not None:
            evidence["frac_dead_elems"] = frac_last
        if dead_modules:
            evidence["modules_with_zero_grad_norm"] = dead_modules
        gated_names = [n for n in names if n in gated]
        if gated_names:
            evidence["gated"] = gated_names[:20]
        # a tensor dead beside a live tensor of its own module is stopped on purpose-looking
        # machinery, whatever its share of the model: the module trains half-blind
        severe = (frac_last is None or frac_last >= th.dead_params_error_fraction
                  or dead_modules or gated_names)
        count = len(names) or n_dead_last or len(dead_modules)
        what = (", ".join(names[:4]) + (" …" if len(names) > 4 else "")) if names else (
            ", ".join(m["module"] for m in dead_modules) or f"{count} tensors")
        share = f" ({pct(frac_last)} of trainable elements)" if frac_last is not None else ""
        fix = FIX.format(story=hint(
            run, " left soft-argmax heads holding half the model's parameters without any "
            "loss"))
        if gated_names:
            fix = FIX_GATED.format(names=", ".join(gated_names[:3])) + " " + fix
        findings.append(Finding(
            ID, "error" if severe else "warning",
            f"{count} trainable parameter tensor(s) never receive a gradient{share}: {what}",
            evidence, fix))
    elif (frac_last is not None and frac_last >= th.dead_elems_fraction) or any(
            v >= th.dead_elems_fraction for v in module_dead.values()):
        partial = {m: v for m, v in module_dead.items() if v >= th.dead_elems_fraction}
        where = f" (in {', '.join(partial)})" if partial else ""
        findings.append(Finding(
            ID, "warning",
            f"{pct(frac_last or 0)} of trainable elements never got a gradient{where}, "
            "although no tensor is fully dead",
            {"frac_dead_elems": frac_last, "modules_dead_fraction": partial,
             "steps": span(steps_of(dead)), "dead_elems_fraction": th.dead_elems_fraction},
            "Part of a module gets no gradient: a clamp or mask that zeroes it, or ReLU "
            "units that never fire (dead units)." + hint(run, " Here a clamp on the "
            "predicted range zeroed 28% of the range head's gradients.")
            + " Replace hard clamps by a smooth bound (sigmoid scaling) or clamp only in the "
            "forward output used for metrics; for dead units lower the lr or use a leaky "
            "activation. Pruning masks zero gradients on purpose."))
    elif len(changes) > 1:
        revived = sorted({n for c in changes for n in as_names(c.get("names"))})
        if revived:
            findings.append(Finding(
                ID, "info",
                f"{len(revived)} tensor(s) were dead for a while, then received gradients",
                {"params": names_summary(revived),
                 "steps": span(np.array([int(c.get("step", 0)) for c in changes]))},
                "Usually a term or head enabled later in training; if not intended, check "
                "the schedule that switches terms on."))
    return findings
