"""Cadence: how often each part of the loop ran (kind `cadence`).

The Workbench counts forward passes (of the root module, while grad is enabled), `wb.loss`
calls, backward passes (end of backward, once per backward), real optimizer steps,
`scheduler.step` calls and evaluations; this probe writes those cumulative counts once per
flush (`step` = the flush step) and at the end of the run. It touches no tensor.

`step-cadence` compares `optimizer_step` with `loss / intent.accumulation` (docs/failures.md #1: one
update per epoch instead of one per batch; docs/failures.md #9: a loss computed but never stepped).
"""

from __future__ import annotations

from riswb.instrument.hooks import Probe, StepContext


class CadenceProbe(Probe):
    """Cumulative forward/loss/backward/optimizer_step/scheduler_step/eval counts."""

    name = "cadence"

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._last: dict[str, int] | None = None

    def flush(self, ctx: StepContext) -> None:
        counts = ctx.wb.counts()
        if counts == self._last:
            return  # nothing ran since the previous record
        self._last = counts
        ctx.wb.writer.scalars(ctx.step, "cadence", counts)
