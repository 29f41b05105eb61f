"""train-mode: training ran with BatchNorm/Dropout-like modules in eval mode, or evaluation
with them in train mode.

Reads kind `mode` (per interval: `forwards` — grad-enabled root forwards —,
`forwards_eval_mode`, `nograd_forwards`, `nograd_forwards_train_mode`, `evals`,
`evals_train_mode`), `mode_mismatch` events (`phase`, `modules`, `trainable`: how many of
them hold trainable params; `params`: their trainable parameters' names), the `coverage`
event (`missing`) and `coverage_grads` (`no_grad`), and kind `cadence` (`backward`).
BatchNorm-like layers put in eval mode on their own while every other layer trains
(`mode_mismatch.selective`: `norm_eval`) are info. Deliberate cases stay silent: a frozen
eval-mode backbone (every mismatched module without
trainable params — unless a layer beside one of them, holding stepped parameters of its own,
ran in eval mode too, event field `eval_holders`: `model.eval()` left on a net whose
mode-dependent modules are parameter-free Dropout —, or — when `params` is recorded —
without a parameter that is stepped: in an optimizer and not among the gradient-free ones,
e.g. a KD teacher kept in eval mode and run under torch.no_grad with requires_grad left
on), and grad-enabled eval-mode forwards that
no backward followed (validation run without torch.no_grad: wasteful, not wrong). A module
whose parameters get gradients but sit in no optimizer is optimizer-coverage's error.
"""

from __future__ import annotations

from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import (
    Unchecked,
    as_names,
    events,
    names_summary,
    need,
    never_gradient,
    span,
    steps_of,
    totals,
)
from riswb.diagnose.text import pct

ID = "train-mode"


def _not_stepped(run) -> set[str]:
    """Tensors that are not trained: in no optimizer (`coverage` `missing`: optimizer-coverage
    reports those that get gradients) or never given a gradient (`coverage_grads`)."""
    audits = events(run, "coverage")
    out = set(as_names(audits[-1].get("missing"))) if audits else set()
    return out | (never_gradient(run) or set())


def _stepped_modules(event: dict, idle: set[str]) -> tuple[list[str], list[str]] | None:
    """(modules, stepped params) of a train-phase event that records `params`: the modules
    holding a stepped parameter, plus parameter-free ones (Dropout) under the same top-level
    module. None when the event predates `params`."""
    params = event.get("params")
    if not isinstance(params, dict):
        return None
    stepped = {m: [p for p in as_names(ps) if p not in idle] for m, ps in params.items()}
    stepped = {m: ps for m, ps in stepped.items() if ps}
    tops = {m.split(".", 1)[0] for m in stepped}
    modules = [m for m in as_names(event.get("modules"))
               if m in stepped or (m not in params and m.split(".", 1)[0] in tops)]
    return modules, [p for ps in stepped.values() for p in ps]


def _parent(name: str) -> str:
    return "" if name == "<root>" or "." not in name else name.rsplit(".", 1)[0]


def _beside_stepped(event: dict, modules: list[str],
                    idle: set[str]) -> tuple[list[str], list[str]]:
    """(modules, stepped params): the listed modules that sit beside a layer holding stepped
    parameters of its own which ran in eval mode with them (same parent module; event field
    `eval_holders`, absent in older runs), and those parameters. A Dropout between trained
    Linear layers put in eval mode by `model.eval()` is; a frozen backbone's BatchNorm, whose
    neighbours are frozen too, is not — nor is it when only a separate head is trained."""
    holders = event.get("eval_holders")
    if not isinstance(holders, dict):
        return [], []
    by_parent: dict[str, list[str]] = {}
    for holder, params in holders.items():
        live = [p for p in as_names(params) if p not in idle]
        if live:
            by_parent.setdefault(_parent(str(holder)), []).extend(live)
    chosen = [m for m in modules if _parent(m) in by_parent]
    params = [p for parent in dict.fromkeys(_parent(m) for m in chosen)
              for p in by_parent[parent]]
    return chosen, params


def _mismatch(run, phase: str) -> tuple[list[str], int | None, int, list[str]]:
    """(module names, first step, trainable count, stepped params) of the `mode_mismatch`
    events of a phase whose modules hold trainable params — stepped ones, where recorded —
    (phase train) or of any (phase eval)."""
    names: list[str] = []
    stepped: list[str] = []
    first, trainable = None, 0
    idle = _not_stepped(run) if phase == "train" else set()
    for event in events(run, "mode_mismatch"):
        if event.get("phase") != phase or (phase == "train" and event.get("selective")):
            continue
        count = int(event.get("trainable") or 0)
        modules = as_names(event.get("modules"))
        if phase == "train":
            # with no trainable param among them (parameter-free Dropout, a frozen backbone)
            # a finding only when layers holding stepped parameters were in eval mode beside
            # them (model.eval() left on); a deliberately frozen eval-mode backbone has none
            found = (_beside_stepped(event, modules, idle) if count == 0
                     else _stepped_modules(event, idle))
            if found is not None:
                modules, params = found
                if not params:
                    continue  # frozen in effect: no gradient, or in no optimizer
                stepped += [p for p in params if p not in stepped]
        trainable = max(trainable, count)
        names += [n for n in modules if n not in names]
        step = int(event.get("first_step", event.get("step", 0)))
        first = step if first is None else min(first, step)
    return names, first, trainable, stepped


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

    names, first, trainable, stepped = _mismatch(run, "train")
    forwards = counts["forwards"]
    # eval-mode forwards beyond those no backward followed were training forwards
    training_eval = max(0.0, counts["forwards_eval_mode"] - max(0.0, forwards - backward))
    if names and training_eval > 0 and forwards > 0:
        fraction = min(1.0, training_eval / min(forwards, backward or forwards))
        evidence = {"steps": steps, "phase": "train", "modules": names,
                    "trainable_modules": trainable, "first_step": first,
                    "training_forwards_eval_mode": int(training_eval),
                    "forwards": int(forwards), "backward_calls": int(backward),
                    "fraction": fraction}
        if stepped:
            evidence["trained_params"] = names_summary(stepped)
        findings.append(Finding(
            ID, "error" if fraction >= th.train_mode_error_fraction else "warning",
            f"Training forwards ran with {', '.join(names[:5])} in eval mode "
            f"({pct(fraction)} of {int(min(forwards, backward or forwards))} training "
            "forwards)" + (f"; {len(stepped)} parameter tensors trained in eval mode "
                           "with them" if stepped else ""),
            evidence,
            "BatchNorm in eval mode normalizes with its running statistics instead of the "
            "batch's and stops updating them; Dropout is off. model.eval() was called (for "
            "validation, or before training) and model.train() never followed. Call "
            "model.train() at the start of every training epoch, and model.eval() only "
            "inside evaluation. To freeze BatchNorm on purpose, also freeze its parameters "
            "(requires_grad_(False)): then riswb reads it as deliberate."))

    selective = [e for e in events(run, "mode_mismatch")
                 if e.get("phase") == "train" and e.get("selective")]
    if selective and not findings:
        modules = list(dict.fromkeys(m for e in selective for m in as_names(e.get("modules"))))
        findings.append(Finding(
            ID, "info",
            f"{', '.join(modules[:5])} ran in eval mode at training forwards while the rest "
            "of the model trained: normalization statistics frozen on purpose",
            {"steps": steps, "phase": "train", "modules": modules, "selective": True,
             "first_step": min(int(e.get("first_step", e.get("step", 0))) for e in selective)},
            "Only the mode-dependent layers were put in eval mode (as `norm_eval` does in "
            "detection codebases: small batches, running statistics kept from pre-training), "
            "so their affine parameters still train. Nothing to do if intended; if not, a "
            "`.eval()` call on those layers (or a helper that freezes BatchNorm) is left on."))

    names, first, _, _ = _mismatch(run, "eval")
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
