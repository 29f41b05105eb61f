"""grads-not-cleared: gradients carried over from one optimizer step into the next.

Reads kind `cadence` (cumulative `optimizer_step`, `grads_cleared_steps`,
`grads_carried_steps` — steps whose gradients did not start from a cleared `.grad` since
that optimizer's previous step —, `backward_accumulating`, and with several optimizers the
same per `opt/<i>/`). Accumulation within a step (k backwards, then step, then clear) is
fine and reads as cleared; carrying across steps re-applies every earlier gradient. The
manifest's `intent.carry_grads` (Workbench(intent={"carry_grads": True})) says it is
deliberate: then info.

The fraction is each optimizer's own: a GAN whose generator never clears carries on all of
the generator's steps, though only on half of all steps when the discriminator's are
counted too. Severity follows the worst optimizer.
"""

from __future__ import annotations

import re

from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, need, span, steps_of, totals
from riswb.diagnose.text import pct

ID = "grads-not-cleared"
_PER_OPT = re.compile(r"^opt/(\d+)/grads_carried_steps$")


def check(run, th: Thresholds) -> list[Finding]:
    cadence = need(run, "cadence", any_of=("grads_carried_steps",),
                   why="gradient clearing is watched per optimizer step")
    counts = totals(cadence, ("optimizer_step", "grads_cleared_steps", "grads_carried_steps",
                              "backward", "backward_accumulating"), cumulative=True)
    watched = counts["grads_cleared_steps"] + counts["grads_carried_steps"]
    if watched < 2:
        raise Unchecked(f"only {int(watched)} optimizer steps watched for gradient clearing")
    carried = counts["grads_carried_steps"]
    if carried == 0:
        return []
    fraction = carried / watched
    per_optimizer = {}
    for name in cadence.columns:
        match = _PER_OPT.match(name)
        if match:
            i = match.group(1)
            own = totals(cadence, (name, f"opt/{i}/grads_cleared_steps"), cumulative=True)
            if own[name]:
                cleared = own[f"opt/{i}/grads_cleared_steps"]
                per_optimizer[i] = {"carried": int(own[name]), "cleared": int(cleared),
                                    "carried_fraction": own[name] / (own[name] + cleared)}
    # judged on the optimizer that carries most of its own steps
    worst = max(per_optimizer, key=lambda i: per_optimizer[i]["carried_fraction"],
                default=None)
    if worst is not None:
        carried = per_optimizer[worst]["carried"]
        watched = carried + per_optimizer[worst]["cleared"]
        fraction = per_optimizer[worst]["carried_fraction"]
    evidence = {
        "steps": span(steps_of(cadence)),
        "optimizer_steps": int(counts["optimizer_step"]),
        "carried_steps": int(counts["grads_carried_steps"]),
        "cleared_steps": int(counts["grads_cleared_steps"]),
        "carried_fraction": fraction,
        "worst_optimizer": worst,
        "backward_calls": int(counts["backward"]),
        "backward_accumulating": int(counts["backward_accumulating"]),
        "per_optimizer": per_optimizer or None,
    }
    intent = run.manifest.get("intent")
    title = "Gradients were carried over from earlier optimizer steps on "
    if worst is None:
        title += f"{int(carried)} of {int(watched)} steps ({pct(fraction)})"
    else:
        title += (f"{int(carried)} of optimizer {worst}'s {int(watched)} steps "
                  f"({pct(fraction)})")
        others = [i for i in per_optimizer if i != worst]
        if others:
            title += f"; also optimizer {', '.join(others)}"

    if isinstance(intent, dict) and intent.get("carry_grads"):
        return [Finding(ID, "info", title + "; declared deliberate (intent.carry_grads)",
                        evidence, "Declared in the run's intent; nothing to do.")]
    return [Finding(
        ID, "error" if fraction >= th.grads_carried_error_fraction else "warning", title,
        evidence,
        "zero_grad() is never called, or not on every step, so each backward adds into the "
        "gradients of all the steps before it and every update re-applies them (the "
        "effective lr grows with the step count). Call optimizer.zero_grad() once per "
        "optimizer step, before backward — after step() when accumulating micro-batches. "
        "With several optimizers, clear each one's gradients. If carrying is deliberate, "
        "declare it: Workbench(..., intent={\"carry_grads\": True}).")]
