"""Loss terms as the optimizer saw them (kind `loss`).

Record (one per flush, `step` = the last `wb.loss` step of the interval): one key per term,
its *unweighted* value, and `total`, the weighted sum returned by `wb.loss`. Weights are in
kind `loss_weight` (written by the Workbench at the start and whenever they change).

Aggregation (`mode`): "mean" (default) averages every `wb.loss` call of the interval (every
`every`-th call when `every` > 1) in float64, on the device, at the flush (one stack of the
interval's values, no op per call), and converts once;
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
        # the interval's values vectors ([terms…, total] per call), kept as they came: `wb.loss`
        # makes a new one per call, and one stack at the flush costs less than an op per call
        self._kept: list[torch.Tensor] = []
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
        if self.mode == "last":
            self._kept = [values]
        else:
            self._kept.append(values)  # summed at the flush: no op on the step itself
        self._step = ctx.step

    def flush(self, ctx: StepContext) -> None:
        self._write(ctx)

    def _write(self, ctx: StepContext) -> None:
        kept, self._kept = self._kept, []
        if not kept:
            return
        acc = torch.stack(kept).to(torch.float64).sum(0) / len(kept)
        numbers = acc.tolist()
        record = dict(zip(self._names, numbers[:-1], strict=True))
        record["total"] = numbers[-1]
        ctx.wb.writer.scalars(self._step, "loss", record)
