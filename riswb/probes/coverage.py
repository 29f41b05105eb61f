"""Optimizer coverage audit (event `coverage`): which trainable tensors the optimizer updates.

At run start, and again whenever the optimizer's parameter groups change (a group added with
`add_param_group`, tensors appended to a group's list; checked before every optimizer step
from the group sizes, a few dict reads), the probe writes one `coverage` event:

* `missing`        — trainable parameter names that are in no param group (docs/failures.md #6);
* `duplicated`     — parameter names that appear in more than one group (or twice in one);
* `zero_lr_groups` — labels of groups whose configured lr is 0 (`initial_lr` when a
  scheduler set one, else `lr`): a warm-up that merely *starts* at 0 is lr_trace's business;
* `stale`          — optimizer tensors that are not parameters of the model
  (`"<group>:<index> <shape>"`, e.g. a head replaced after the optimizer was built);
* `groups`         — `{label: {top-level module: tensor count}}` (label = group `name` or
  its index; tensors that are not in the model count under "<stale>");
* extra keys: `frozen` (names with requires_grad=False that sit in the optimizer),
  `group_lr` ({label: lr now}), `reason` ("start" | "param_groups_changed").
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext


def _label(group: dict[str, Any], index: int) -> str:
    name = group.get("name")
    return str(name) if name is not None else str(index)


def _float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)


def audit(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The coverage event's payload for `model` and `optimizer` (pure; used by the probe)."""
    all_names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    seen: Counter[int] = Counter()
    groups: dict[str, dict[str, int]] = {}
    group_lr: dict[str, float] = {}
    zero_lr: list[str] = []
    stale: list[str] = []
    frozen: list[str] = []
    for index, group in enumerate(optimizer.param_groups):
        label = _label(group, index)
        modules: Counter[str] = Counter()
        for position, param in enumerate(group["params"]):
            seen[id(param)] += 1
            name = all_names.get(id(param))
            if name is None:
                stale.append(f"{label}:{position} {tuple(param.shape)}")
                modules["<stale>"] += 1
                continue
            modules[name.split(".", 1)[0]] += 1
            if not param.requires_grad and seen[id(param)] == 1:
                frozen.append(name)
        groups[label] = dict(modules)
        lr = _float(group.get("lr", 0.0))
        group_lr[label] = lr
        configured = group.get("initial_lr", group.get("lr", 0.0))
        if _float(configured) == 0.0:
            zero_lr.append(label)
    return {
        "missing": [n for n, p in trainable if seen[id(p)] == 0],
        "duplicated": [all_names.get(i, f"<stale {i}>") for i, c in seen.items() if c > 1],
        "zero_lr_groups": zero_lr,
        "stale": stale,
        "groups": groups,
        "frozen": frozen,
        "group_lr": group_lr,
    }


def _signature(optimizer: torch.optim.Optimizer) -> tuple[int, ...]:
    return tuple(len(group["params"]) for group in optimizer.param_groups)


class CoverageProbe(Probe):
    """Audits optimizer coverage at start and whenever the param groups change."""

    name = "coverage"

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._signature: tuple[int, ...] | None = None
        self.last: dict[str, Any] | None = None

    def on_run_start(self, ctx: StepContext) -> None:
        self._audit(ctx, "start")

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        if _signature(ctx.wb.optimizer) != self._signature:
            self._audit(ctx, "param_groups_changed")

    def _audit(self, ctx: StepContext, reason: str) -> None:
        wb = ctx.wb
        self._signature = _signature(wb.optimizer)
        self.last = audit(wb.model, wb.optimizer)
        wb.writer.event(ctx.step, "coverage", **self.last, reason=reason)
