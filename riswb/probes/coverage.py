"""Optimizer coverage (event `coverage`): which trainable tensors the optimizer updates.

At run start, and again whenever the optimizer's parameter groups change (a group added with
`add_param_group`, tensors appended to a group's list; checked before every optimizer step
from the group sizes, a few dict reads), the probe writes one `coverage` event: the fields
of `riswb.probes.params.CoverageAudit` (missing heads are docs/failures.md #6) plus `reason`
("start" | "param_groups_changed"). With several optimizers (`Workbench(m, [a, b])`) the audit
is of their union: a tensor in two optimizers is `duplicated`, one in none `missing`, and
group labels read `opt/<i>/<label>`. Names have wrapper prefixes stripped. A tensor that
becomes trainable after the start (gradual unfreezing) triggers one more audit (reason
"trainable_changed": is it in the optimizer?); tensors seen trainable once are not audited
again, so a GAN that toggles requires_grad every step is audited about twice. A warm-up
that merely *starts* at lr 0 is lr_trace's business, not a zero-lr group."""

from __future__ import annotations

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.params import CoverageAudit, audit_coverage


def _signature(optimizers: list[torch.optim.Optimizer]) -> tuple[int, ...]:
    return tuple(len(group["params"]) for opt in optimizers for group in opt.param_groups)


class CoverageProbe(Probe):
    """Audits optimizer coverage at start and whenever the param groups change."""

    name = "coverage"

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._signature: tuple[int, ...] | None = None
        self._trainable: set[int] = set()  # ids of the model's tensors ever seen trainable
        self.last: CoverageAudit | None = None

    def on_run_start(self, ctx: StepContext) -> None:
        self._audit(ctx, "start")

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        if _signature(ctx.wb.optimizers) != self._signature:
            self._audit(ctx, "param_groups_changed")
        elif any(p.requires_grad and id(p) not in self._trainable
                 for p in ctx.wb.model.parameters()):
            self._audit(ctx, "trainable_changed")

    def _audit(self, ctx: StepContext, reason: str) -> None:
        wb = ctx.wb
        self._signature = _signature(wb.optimizers)
        self._trainable.update(id(p) for p in wb.model.parameters() if p.requires_grad)
        self.last = audit_coverage(wb.model, wb.optimizers)
        wb.writer.event(ctx.step, "coverage", **self.last.to_payload(), reason=reason)
