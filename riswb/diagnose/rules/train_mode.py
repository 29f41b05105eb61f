"""train-mode: training ran with BatchNorm/Dropout-like modules in eval mode, or evaluation
with them in train mode.

Reads kind `mode` (per interval: `forwards` — grad-enabled root forwards —,
`forwards_eval_mode`, `nograd_forwards`, `nograd_forwards_train_mode`, `evals`,
`evals_train_mode`), `mode_mismatch` events (`phase`, `modules`, `trainable`: how many of
them hold trainable params) and kind `cadence` (`backward`). Deliberate cases stay silent:
a frozen eval-mode backbone (every mismatched module without trainable params), and
grad-enabled eval-mode forwards that no backward followed (validation run without
torch.no_grad: wasteful, not wrong).
"""

from __future__ import annotations

from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, as_names, events, need, span, steps_of, totals
from riswb.diagnose.text import pct

ID = "train-mode"


def _mismatch(run, phase: str) -> tuple[list[str], int | None, int]:
    """(module names, first step, trainable count) of the `mode_mismatch` events of a phase
    whose modules hold trainable params (phase train) or of any (phase eval)."""
    names: list[str] = []
    first, trainable = None, 0
    for event in events(run, "mode_mismatch"):
        if event.get("phase") != phase:
            continue
        count = int(event.get("trainable") or 0)
        if phase == "train" and count == 0:
            continue  # a deliberately frozen eval-mode backbone
        trainable = max(trainable, count)
        names += [n for n in as_names(event.get("modules")) if n not in names]
        step = int(event.get("first_step", event.get("step", 0)))
        first = step if first is None else min(first, step)
    return names, first, trainable


def check(run, th: Thresholds) -> list[Finding]:
    mode = need(run, "mode", any_of=("forwards_eval_mode",),
                why="module modes are recorded at every forward")
    counts = totals(mode, ("modules", "forwards", "forwards_eval_mode", "nograd_forwards",
                           "nograd_forwards_train_mode", "evals", "evals_train_mode"),
                    cumulative=False)
    if not counts["modules"]:
        raise Unchecked("the model has no mode-dependent module (BatchNorm, Dropout, ...)")
    backward = totals(need(run, "cadence", any_of=("backward",), why="backward counts"),
                      ("backward",), cumulative=True)["backward"]
    findings = []
    steps = span(steps_of(mode))

    names, first, trainable = _mismatch(run, "train")
    forwards = counts["forwards"]
    # eval-mode forwards beyond those no backward followed were training forwards
    training_eval = max(0.0, counts["forwards_eval_mode"] - max(0.0, forwards - backward))
    if names and training_eval > 0 and forwards > 0:
        fraction = min(1.0, training_eval / min(forwards, backward or forwards))
        findings.append(Finding(
            ID, "error" if fraction >= th.train_mode_error_fraction else "warning",
            f"Training forwards ran with {', '.join(names[:5])} in eval mode "
            f"({pct(fraction)} of {int(min(forwards, backward or forwards))} training "
            "forwards)",
            {"steps": steps, "phase": "train", "modules": names, "trainable_modules": trainable,
             "first_step": first, "training_forwards_eval_mode": int(training_eval),
             "forwards": int(forwards), "backward_calls": int(backward),
             "fraction": fraction},
            "BatchNorm in eval mode normalizes with its running statistics instead of the "
            "batch's and stops updating them; Dropout is off. model.eval() was called (for "
            "validation, or before training) and model.train() never followed. Call "
            "model.train() at the start of every training epoch, and model.eval() only "
            "inside evaluation. To freeze BatchNorm on purpose, also freeze its parameters "
            "(requires_grad_(False)): then riswb reads it as deliberate."))

    names, first, _ = _mismatch(run, "eval")
    bad_evals = counts["nograd_forwards_train_mode"] + counts["evals_train_mode"]
    if names and bad_evals > 0:
        total = counts["nograd_forwards"] + counts["evals"]
        findings.append(Finding(
            ID, "warning",
            f"Evaluation ran with {', '.join(names[:5])} in train mode "
            f"({int(bad_evals)} of {int(total)} no-grad forwards and wb.evaluate calls)",
            {"steps": steps, "phase": "eval", "modules": names, "first_step": first,
             "nograd_forwards_train_mode": int(counts["nograd_forwards_train_mode"]),
             "evals_train_mode": int(counts["evals_train_mode"])},
            "Validation in train mode applies Dropout and normalizes with batch statistics "
            "while updating BatchNorm's running statistics with validation data, so the "
            "scores are noisy and the model changes. Call model.eval() before evaluating "
            "(and model.train() after)."))
    return findings
