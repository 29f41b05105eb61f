"""Learning rate per param group at every optimizer step (kind `lr`, event `scheduler_order`).

Record (one per optimizer step, buffered and written at the flush; `step` = the `wb.loss`
step of the optimizer step): `opt_step` and `group/<g>` = the lr that step used (read in the
post-step hook, before the scheduler moves it; g = the group's `name` or its index), and
`initial/<g>` = the group's base lr (`initial_lr`, set by torch schedulers) when known, so
"lr stuck at a small fraction of its target" is visible (docs/failures.md #2). A tensor lr is copied
on the device and read at the flush.

Event `scheduler_order` {`scheduler_step`, `opt_step`: 0} once, when `scheduler.step()` runs
before the first real optimizer step (docs/failures.md #3). PyTorch's own warning for the same thing
is left alone. (A GradScaler that skips the very first step triggers it too, as it does
PyTorch's warning.)
"""

from __future__ import annotations

from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.params import group_label


def _labels(groups: list[dict[str, Any]]) -> list[str]:
    return [group_label(g, i) for i, g in enumerate(groups)]


def _as_float(lr: Any) -> float:
    return float(lr.float().mean()) if isinstance(lr, torch.Tensor) else float(lr)


class LRTraceProbe(Probe):
    """lr per param group each optimizer step; flags scheduler.step before optimizer.step."""

    name = "lr_trace"

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._rows: list[tuple[int, int, Any, list[Any], list[Any]]] = []
        self._labels_key: Any = None
        self._labels: list[str] = []
        self._order_reported = False

    def on_after_optimizer_step(self, ctx: StepContext) -> None:
        groups = ctx.wb.optimizer.param_groups
        key = tuple(g.get("name") for g in groups)
        if key != self._labels_key:
            self._labels_key, self._labels = key, _labels(groups)
        lrs = [g["lr"] for g in groups]
        lrs = [lr.detach().clone() if isinstance(lr, torch.Tensor) else lr for lr in lrs]
        initial = [g.get("initial_lr") for g in groups]
        self._rows.append((ctx.step, ctx.payload["opt_step"], self._labels, lrs, initial))

    def on_after_scheduler_step(self, ctx: StepContext) -> None:
        if ctx.wb.opt_step == 0 and not self._order_reported:
            self._order_reported = True
            ctx.wb.writer.event(ctx.step, "scheduler_order",
                                scheduler_step=ctx.payload.get("scheduler_step"), opt_step=0)

    def flush(self, ctx: StepContext) -> None:
        rows, self._rows = self._rows, []
        for step, opt_step, labels, lrs, initial in rows:
            record: dict[str, Any] = {"opt_step": opt_step}
            for label, lr, base in zip(labels, lrs, initial, strict=True):
                record[f"group/{label}"] = _as_float(lr)
                if base is not None:
                    record[f"initial/{label}"] = _as_float(base)
            ctx.wb.writer.scalars(step, "lr", record)
