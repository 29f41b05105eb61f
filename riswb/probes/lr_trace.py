"""Learning rate per param group at every optimizer step (kind `lr`, event `scheduler_order`).

Record (one per optimizer step, buffered and written at the flush; `step` = the `wb.loss`
step of the optimizer step): `opt_step` and `group/<g>` = the lr that step used (read in the
post-step hook, before the scheduler moves it; g = the group's `name` or its index), and
`initial/<g>` = the group's base lr (`initial_lr`, set by torch schedulers) when known, so
"lr stuck at a small fraction of its target" is visible (docs/failures.md #2), `optimizer` =
the index of the optimizer that stepped and `optimizer_step` its own 1-based step count
(several optimizers: one record per optimizer step, the `group/<g>` labels being that
optimizer's groups). A tensor lr is copied on the device and read at the flush.

Event `scheduler_order` {`scheduler_step`, `opt_step`: 0} once, when `scheduler.step()` runs
before the first real optimizer step (docs/failures.md #3) — unless an optimizer step was
ATTEMPTED and skipped before it (a GradScaler skipping step 0 in the standard fp16 recipe,
or `wb.step_skipped`): the loop called the optimizer first, so the order is right. PyTorch
warns in that case too; riswb re-issues PyTorch's warning at the user's call site.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.params import group_label

_HEAD = ("opt_step", "optimizer", "optimizer_step")


def _labels(groups: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(group_label(g, i) for i, g in enumerate(groups))


def _keys(labels: tuple[str, ...], present: tuple[bool, ...]) -> tuple[str, ...]:
    """A record's keys: `_HEAD`, then per group its lr and, where known, its base lr."""
    keys = list(_HEAD)
    for label, has_initial in zip(labels, present, strict=True):
        keys.append(f"group/{label}")
        if has_initial:
            keys.append(f"initial/{label}")
    return tuple(keys)


def _as_float(lr: Any) -> float:
    """NaN for None: an optimizer that sets its own step size (Adafactor, relative_step)."""
    if lr is None:
        return math.nan
    return float(lr.float().mean()) if isinstance(lr, torch.Tensor) else float(lr)


class LRTraceProbe(Probe):
    """lr per param group each optimizer step; flags scheduler.step before optimizer.step."""

    name = "lr_trace"

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._rows: list[tuple[int, tuple[int, int, int], tuple[str, ...], list, list]] = []
        self._labels: dict[int, tuple[Any, tuple[str, ...]]] = {}  # optimizer -> (key, labels)
        self._order_reported = False

    def on_after_optimizer_step(self, ctx: StepContext) -> None:
        index = ctx.payload.get("optimizer", 0)
        groups = ctx.wb.optimizers[index].param_groups
        key = tuple(g.get("name") for g in groups)
        cached = self._labels.get(index)
        if cached is None or cached[0] != key:
            cached = self._labels[index] = (key, _labels(groups))
        lrs = [g["lr"] for g in groups]
        lrs = [lr.detach().clone() if isinstance(lr, torch.Tensor) else lr for lr in lrs]
        initial = [g.get("initial_lr") for g in groups]
        head = (ctx.payload["opt_step"], index,  # in `_HEAD` order
                ctx.payload.get("optimizer_step", ctx.payload["opt_step"]))
        self._rows.append((ctx.step, head, cached[1], lrs, initial))

    def on_after_scheduler_step(self, ctx: StepContext) -> None:
        if self._order_reported or ctx.wb.opt_step:  # an optimizer step came first
            return
        if not sum(ctx.wb.skipped.values()):
            self._order_reported = True
            ctx.wb.writer.event(ctx.step, "scheduler_order",
                                scheduler_step=ctx.payload.get("scheduler_step"), opt_step=0)

    def flush(self, ctx: StepContext) -> None:
        rows, self._rows = self._rows, []
        batches: list[tuple[tuple, list]] = []  # runs of records with the same keys
        for step, head, labels, lrs, initial in rows:
            # one record per optimizer step: Python-float lrs (the usual case) as they are
            present = (True,) * len(initial) if None not in initial else tuple(
                base is not None for base in initial)
            values = list(head)
            for lr, base in zip(lrs, initial, strict=True):
                values.append(lr if type(lr) is float else _as_float(lr))
                if base is not None:
                    values.append(base if type(base) is float else _as_float(base))
            if not batches or batches[-1][0] != (labels, present):
                batches.append(((labels, present), []))
            batches[-1][1].append((step, values))
        for (labels, present), batch in batches:
            ctx.wb.writer.scalar_rows("lr", _keys(labels, present), batch)
