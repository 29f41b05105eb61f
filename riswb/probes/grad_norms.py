"""Raw gradient norms: the total and one per top-level child module (kind `grad_norm`).

Read at AFTER_BACKWARD, i.e. at the end of `loss.backward()` and before the user's own
sanitize/clip code, so the numbers are the *raw* gradients (docs/failures.md #12, 18).

The per-tensor norms come from `riswb.probes.gradients.raw_grad_stats`, shared with the
other gradient probes.

Record (one per flush, `step` = the flush step): `total` and `module/<name>` are the
root-mean-square over the backward passes since the previous record of ‖g‖₂ over all
trainable tensors and over the tensors of each top-level child module (`name` is the first
component of the parameter name, so a parameter that sits directly on the root module is
its own "module"): √(mean_steps ‖g‖²). The RMS costs one fused op per step (Σ ‖g_p‖² per
tensor); the module sums and square roots wait for the flush.
Under a GradScaler (riswb.instrument.scaler) the norms are UNSCALED: the raw norms times
the inverse of the scale the backward ran under, as a device op (no host sync), so they are
comparable with an fp32 run's. A tensor whose grad is None contributes 0. A NaN/Inf
gradient makes the mean NaN/Inf: the numbers are raw on purpose; kind `nonfinite` counts
the elements.
"""

from __future__ import annotations

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.gradients import ModuleIndex, raw_grad_stats


class GradNormsProbe(Probe):
    """Total and per-top-level-module raw gradient norms, RMS over each flush interval."""

    name = "grad_norms"
    sampled = True  # statistics over observed steps (riswb.instrument.observation)

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._index: ModuleIndex | None = None
        self._squares: torch.Tensor | None = None  # (P,) Σ over backwards of ‖g_p‖²
        self._count = 0

    def on_after_backward(self, ctx: StepContext) -> None:
        if not ctx.wb.named_params:
            return
        index = ModuleIndex.of(ctx.wb, self._index)
        norms = raw_grad_stats(ctx.wb).unscaled
        if index is not self._index or self._squares is None:
            self._index = index  # (a new parameter set restarts the interval)
            self._squares, self._count = torch.zeros_like(norms), 0
        self._squares.addcmul_(norms, norms)  # the one op per step
        self._count += 1

    def flush(self, ctx: StepContext) -> None:
        index, squares = self._index, self._squares
        if not self._count or index is None or squares is None:
            return
        # per module: Σ_steps Σ_p∈m ‖g_p‖² — index_add keeps a NaN inside its own module
        sums = torch.zeros(len(index.names) + 1, dtype=squares.dtype, device=squares.device)
        sums.index_add_(0, index.owner + 1, squares)
        sums[0] = squares.sum()
        values = (sums / self._count).sqrt().tolist()
        record = {"total": values[0]}
        modules = zip(index.names, values[1:], strict=True)
        record.update({f"module/{m}": v for m, v in modules})
        ctx.wb.writer.scalars(ctx.step, "grad_norm", record)
        self._squares.zero_()
        self._count = 0
