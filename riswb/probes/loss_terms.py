"""Loss terms as the optimizer saw them (kind `loss`).

Record (one per flush, `step` = the last `wb.loss` step of the interval): one key per term,
its *unweighted* value, and `total`, the weighted sum returned by `wb.loss`. Weights are in
kind `loss_weight` (written by the Workbench at the start and whenever they change).

Aggregation (`mode`): "mean" (default) averages every `wb.loss` call of the interval (every
`every`-th call when `every` > 1) on the device, in float64, and converts once at the flush;
"last" records the value of the interval's last call. Non-finite values are never averaged
away: a NaN (or +Inf and -Inf) on any call makes that interval's mean NaN, a lone ±Inf makes
it ±Inf, so `nonfinite-loss` sees them. If the set of term names changes, the interval so
far is written first (at its last step) and a new average starts.
"""

from __future__ import annotations

from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext


def _values(terms: dict[str, Any], total: Any) -> torch.Tensor:
    parts = [*terms.values(), total]
    device = next((t.device for t in parts if isinstance(t, torch.Tensor)), None)
    return torch.stack(
        [
            torch.as_tensor(t, device=device).detach().to(torch.float64).reshape(-1).mean()
            for t in parts
        ]
    )


class LossTermsProbe(Probe):
    """Per-term unweighted values and the weighted total, averaged per log interval."""

    name = "loss_terms"

    def __init__(self, every: int | None = None, *, mode: str = "mean"):
        super().__init__(every)
        if mode not in ("mean", "last"):
            raise ValueError(f"mode must be 'mean' or 'last', got {mode!r}")
        self.mode = mode
        self._names: tuple[str, ...] = ()
        self._acc: torch.Tensor | None = None
        self._count = 0
        self._step = 0

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": self.mode}

    def on_after_loss(self, ctx: StepContext) -> None:
        terms = ctx.payload["terms"]
        names = tuple(terms)
        values = ctx.payload.get("values")
        if values is None:
            values = _values(terms, ctx.payload["total"])
        if names != self._names:
            self._write(ctx)
            self._names = names
        if self._acc is None or self.mode == "last":
            self._acc = values.detach().to(torch.float64, copy=True)
        else:
            self._acc.add_(values)
        self._count += 1
        self._step = ctx.step

    def flush(self, ctx: StepContext) -> None:
        self._write(ctx)

    def _write(self, ctx: StepContext) -> None:
        if not self._count or self._acc is None:
            return
        acc = self._acc if self.mode == "last" else self._acc / self._count
        numbers = acc.tolist()
        record = dict(zip(self._names, numbers[:-1], strict=True))
        record["total"] = numbers[-1]
        ctx.wb.writer.scalars(self._step, "loss", record)
        self._acc = None
        self._count = 0
