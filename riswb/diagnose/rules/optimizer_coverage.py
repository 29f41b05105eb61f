"""optimizer-coverage: trainable params missing from the optimizer, in two groups, in lr=0
groups, or optimizer tensors that are not in the model.

Reads the `coverage` event (`missing`, `duplicated`, `zero_lr_groups`, `stale`, `groups`,
`frozen`, `group_lr`), kind `lr` (`group/<g>`) to tell a warm-up that starts at 0 from a
group stuck at 0, and kind `param_update` (`group/<g>/ratio`, NaN while none of the group's
tensors is trainable) for groups with an lr whose tensors stayed frozen all run.
A missing tensor that never received a gradient (the `coverage_grads` event's `no_grad`:
a KD teacher run only under torch.no_grad with requires_grad left on) is effectively frozen:
leaving it out of the optimizer loses nothing, so it is reported as info, not an error.
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
    names_summary,
    never_gradient,
    totals,
)
from riswb.probes.params import top_module

ID = "optimizer-coverage"


def _modules(summary: dict) -> str:
    parts = [f"{m} ({c})" for m, c in summary["by_module"].items()]
    return ", ".join(parts[:6]) + (" …" if len(parts) > 6 else "")


def _frozen_groups(run, audit: dict, base: dict, th: Thresholds) -> list[Finding]:
    """Param groups given an lr whose tensors stayed frozen for the whole run while other
    groups trained (kind `param_update`: a group's ratio is NaN while none of its tensors
    is trainable): `model.requires_grad_(False)` meant for part of the model, or a module
    frozen by default, in a group the loop configured to train. A group frozen for part of
    the run (gradual unfreezing, progressive freezing) is measured when trainable."""
    updates = frame_of(run, "param_update")
    columns = [c for c in updates.columns if c.startswith("group/") and c.endswith("/ratio")]
    if len(updates) < th.min_term_samples or len(columns) < 2:
        return []
    measured = {c[len("group/"):-len("/ratio")]: np.isfinite(col(updates, c)).any()
                for c in columns}
    if not any(measured.values()):
        return []  # nothing trains at all: params-not-moving's business
    group_lr = audit.get("group_lr") if isinstance(audit.get("group_lr"), dict) else {}
    lr = frame_of(run, "lr")
    idle = []
    for group, trained in measured.items():
        if trained:
            continue
        values = col(lr, f"group/{group}")
        peak = float(np.nanmax(values)) if np.isfinite(values).any() else float(
            group_lr.get(group, 0.0) or 0.0)
        if peak > th.lr_min:
            idle.append((group, peak))
    if not idle:
        return []
    frozen = as_names(audit.get("frozen"))
    return [Finding(
        ID, "warning",
        "Param group(s) " + ", ".join(f"{g} (lr {peak:.3g})" for g, peak in idle)
        + " held only frozen tensors (requires_grad=False) for the whole run: they never "
        "trained while the other groups did",
        {**base, "idle_groups": [g for g, _ in idle], "frozen": names_summary(frozen),
         "param_update_records": len(updates)},
        "The loop gave these groups a learning rate, but their tensors never required grad: "
        "model.requires_grad_(False) (meant for part of the model) was left on them, or a "
        "module came frozen by default (from_pretrained(freeze=True)). If they should "
        "train, call requires_grad_(True) on them; if the freeze is intended, leave them "
        "out of the optimizer.")]


def _idle_optimizers(run, audit: dict, base: dict, th: Thresholds) -> list[Finding]:
    """An optimizer of several that never stepped while the others did (kind `cadence`:
    `opt/<i>/optimizer_step`; the audit's `opt/<i>/<label>` groups): its tensors, trainable
    and in no other optimizer, never update — `opt_dec.step()` forgotten. Steps a
    GradScaler skipped are step-skipped's business; an optimizer whose tensors are all
    frozen has nothing to lose. Judged once the run has ended: mid-run (the fail-fast
    checks) an optimizer may still be waiting for its phase."""
    if run.manifest.get("status") == "running":
        return []  # mid-run (fail-fast checks): an optimizer may start in a later phase
    groups = audit.get("groups")
    if not isinstance(groups, dict):
        return []
    owned: dict[int, dict[str, int]] = {}  # optimizer -> module -> tensors
    for label, modules in groups.items():
        parts = str(label).split("/")
        if len(parts) < 3 or parts[0] != "opt" or not isinstance(modules, dict):
            continue
        for module, count in modules.items():
            into = owned.setdefault(int(parts[1]), {})
            into[module] = into.get(module, 0) + int(count)
    if len(owned) < 2:
        return []
    counts = totals(frame_of(run, "cadence"),
                    [f"opt/{i}/optimizer_step" for i in owned] + ["optimizer_step"],
                    cumulative=True)
    if counts["optimizer_step"] < th.min_cadence_batches:
        return []
    skipped = {e.get("optimizer") for e in events(run, "step_skipped")}
    frozen = [top_module(n) for n in as_names(audit.get("frozen"))]
    findings = []
    for index, modules in sorted(owned.items()):
        if counts[f"opt/{index}/optimizer_step"] or index in skipped:
            continue
        tensors = sum(modules.values())
        if sum(frozen.count(m) for m in modules) >= tensors:
            continue
        findings.append(Finding(
            ID, "error",
            f"Optimizer {index} ({', '.join(f'{m} ({c})' for m, c in modules.items())}) never "
            f"stepped, while the others stepped {int(counts['optimizer_step'])} times: its "
            f"{tensors} tensors never update",
            {**base, "optimizer": index, "modules": modules,
             "optimizer_steps": {f"opt/{i}": int(counts[f"opt/{i}/optimizer_step"])
                                 for i in owned}},
            f"optimizer {index}.step() is never called: a step forgotten for one of several "
            "optimizers (an encoder/decoder or generator/discriminator pair), or called on "
            "another optimizer twice by a copy-paste. Call step() (and zero_grad()) on every "
            "optimizer whose parameters the loss trains, or merge them into one optimizer "
            "with a param group each."))
    return findings


def check(run, th: Thresholds) -> list[Finding]:
    audits = events(run, "coverage")
    if not audits:
        raise Unchecked("no `coverage` event: the optimizer was not audited at run start")
    audit = audits[-1]
    groups = audit.get("groups")
    base = {"audit_step": int(audit.get("step", 0)), "audits": len(audits)}
    if groups is not None:
        base["groups"] = groups
    findings: list[Finding] = []

    missing = as_names(audit.get("missing"))
    no_grad = never_gradient(run) or set()
    frozen = [n for n in missing if n in no_grad]
    missing = [n for n in missing if n not in no_grad]
    if frozen:
        summary = names_summary(frozen)
        findings.append(Finding(
            ID, "info",
            f"{len(frozen)} parameter tensors require grad but are in no optimizer and never "
            f"received a gradient (effectively frozen): {_modules(summary)}",
            {**base, "frozen_by_no_grad": summary},
            "Nothing is lost: these tensors get no gradient (e.g. a teacher run under "
            "torch.no_grad). Call requires_grad_(False) on them to say so explicitly; if "
            "they should train, route a loss to them and add them to the optimizer."))
    if missing:
        summary = names_summary(missing)
        findings.append(Finding(
            ID, "error",
            f"{len(missing)} trainable parameter tensors are not in the optimizer: "
            f"{_modules(summary)}",
            {**base, "missing": summary},
            "These parameters never update. Build the optimizer after every module exists "
            "and assign groups exhaustively: match by module prefix with a catch-all group, "
            "and assert that every name in model.named_parameters() with requires_grad lands "
            "in exactly one group. A common cause: a head created or replaced after the "
            "optimizer was built, or group lists matched by name that miss new modules."
            + hint(run, " Here parameters of new heads matched no name in the 'head' group "
                   "list.")))

    duplicated = as_names(audit.get("duplicated"))
    if duplicated:
        summary = names_summary(duplicated)
        findings.append(Finding(
            ID, "error",
            f"{len(duplicated)} parameter tensors are in more than one param group "
            f"(or optimizer): {_modules(summary)}",
            {**base, "duplicated": summary},
            "Each parameter must be in exactly one group, otherwise it is stepped twice at "
            "two lrs. Build groups from disjoint name filters (e.g. 'heads.' prefix vs the "
            "rest) instead of overlapping lists."))

    zero = as_names(audit.get("zero_lr_groups"))
    if zero:
        lr = frame_of(run, "lr")
        stuck, warming = [], []
        for group in zero:
            values = col(lr, f"group/{group}")
            ok = np.isfinite(values)
            if ok.any() and np.nanmax(values) > th.lr_min:
                warming.append(group)
            else:
                stuck.append(group)
        if stuck:
            findings.append(Finding(
                ID, "error",
                f"Param group(s) {', '.join(stuck)} have lr = 0"
                + ("" if not lr.empty else " at start (no lr trace to show it changes)"),
                {**base, "zero_lr_groups": stuck, "lr_recorded": not lr.empty},
                "A group with lr 0 never trains. Set its lr (or the scheduler's base lr) "
                "explicitly; if a module should stay frozen, call requires_grad_(False) "
                "instead of giving it lr 0."))
        if warming:
            findings.append(Finding(
                ID, "info",
                f"Param group(s) {', '.join(warming)} start at lr = 0 (the warm-up raises it)",
                {**base, "zero_lr_groups": warming},
                "A warm-up that starts at exactly 0 wastes its first steps; start it above "
                "zero, e.g. lr·(step+1)/warmup_steps."))

    findings += _frozen_groups(run, audit, base, th)
    findings += _idle_optimizers(run, audit, base, th)

    stale = as_names(audit.get("stale"))
    if stale:
        summary = names_summary(stale)
        findings.append(Finding(
            ID, "warning",
            f"The optimizer holds {len(stale)} tensors that are not in the model",
            {**base, "stale": summary},
            "The optimizer was built before the model was rebuilt, re-wrapped or reloaded: "
            "its updates go to orphan tensors. Create the optimizer from the final model "
            "(after .to(device), DDP/compile wrapping and checkpoint loading)."))
    return findings
