"""Non-finite losses and gradients, counted on the *raw* gradient (kind `nonfinite`).

docs/failures.md #12: NaN gradients replaced by 0 and ±inf by ±1 hid AMP overflow for weeks. This
probe reads the gradients at AFTER_BACKWARD — the end of `loss.backward()`, before the
user's sanitize/clip code runs — so whatever `wb.sanitize_()` (or `nan_to_num_`) later
hides has already been counted; `sanitized` then says how much of it was masked.

Record (one per flush, `step` = the flush step), totals since the previous record:

* `grad_elems` — raw non-finite gradient elements, summed over backward passes;
* `params`     — distinct trainable tensors that held at least one of them;
* `sanitized`  — elements replaced through `wb.sanitize_()` (read from the Workbench's
  on-device counter, which this probe resets);
* `loss`       — 1 if the total loss was non-finite on any step of the interval, else 0;
* `step_attempts`      — optimizer-step attempts in the interval: real steps plus skipped
  ones (GradScaler skips, `wb.step_skipped`);
* `attempts_nonfinite` — attempts whose last backward left a non-finite raw gradient;
* `attempts_skipped`   — attempts that were skipped. A GradScaler calibrating its scale skips
  a few early attempts (attempts_nonfinite ≈ attempts_skipped ≪ step_attempts); NaN every
  step reads attempts_nonfinite ≈ step_attempts.

`sanitized` is the larger of `wb.sanitize_`'s count and what GradStepProbe observed at the
optimizer step (non-finite elements at backward end in tensors all finite at step: the
loop's own `nan_to_num_`/masking), so either route is counted once.

Cost per step: the per-tensor norms shared with GradNormsProbe tell which tensors hold a
non-finite value (‖g‖ is NaN/Inf exactly then, barring float overflow of the norm, which is
counted correctly as 0 elements); elements are counted only in those tensors. On CPU that
test is a free host read; on an accelerator the count runs every step without a branch
(fused multi-tensor ops map each element to 0 or −1 for non-finite and an ord-1 norm sums
them, see `_nonfinite_elements`), so no step ever waits for the device.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.gradients import all_finite_on_cpu, device_index, raw_grad_stats

_CACHE_KEY = "riswb.raw_nonfinite"


def raw_nonfinite(wb: Any) -> torch.Tensor | None:
    """`count_nonfinite` of this backward's raw gradients, memoised like `raw_grad_stats`
    (shared by NonFiniteProbe and GradStepProbe)."""

    def compute() -> torch.Tensor | None:
        stats = raw_grad_stats(wb)
        if stats.host_finite():
            return None  # the usual CPU step: no vector of norms built for this
        return count_nonfinite(stats.grads, stats.norms)

    return wb.cached(_CACHE_KEY, compute)


def count_nonfinite(
    grads: list[torch.Tensor | None], norms: torch.Tensor, *, branch: bool | None = None
) -> torch.Tensor | None:
    """(P,) float64: non-finite elements per tensor (0 for a None grad), or None for "none".

    `branch` (default: on CPU only) reads on the host whether any norm is non-finite and
    counts only the tensors whose norm is (returning None when all are finite); without it
    every present tensor is counted, with no host sync.
    """
    if branch is None:
        branch = norms.is_cpu
    if branch:
        # norms are ≥ 0: their sum is finite when every norm is (one op and one read); a
        # sum that overflowed finds no non-finite norm below and counts nothing
        if math.isfinite(norms.sum().item()):
            return None
        index = tuple((~torch.isfinite(norms)).nonzero().flatten().tolist())
    else:
        index = tuple(i for i, g in enumerate(grads) if g is not None)
    chosen = [grads[i] for i in index]
    if not chosen:
        return None
    if any(g.is_sparse for g in chosen):
        chosen = [g.coalesce().values() if g.is_sparse else g for g in chosen]
    found = _nonfinite_elements(chosen)
    if all(f.device == norms.device for f in found):
        values = torch.stack(found).to(torch.float64)
    else:
        values = torch.stack([f.to(device=norms.device, dtype=torch.float64) for f in found])
    if len(index) == len(grads):
        return values
    counts = torch.zeros(len(grads), dtype=torch.float64, device=norms.device)
    return counts.index_copy_(0, device_index(index, norms.device), values)


def _nonfinite_elements(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Non-finite elements per tensor. float32/float64: five fused multi-tensor ops, one
    transient copy of the gradients and no per-tensor launch (the ord-0 norm that counts
    directly has no fused kernel: on a GPU it was one launch per tensor and the costliest
    thing in the default probes). Others (half precision, complex): counted per tensor in
    int64, since a half-precision sum of ones rounds (and overflows at 65504)."""
    if not all(g.dtype in (torch.float32, torch.float64) for g in grads):
        return [(~torch.isfinite(g)).sum() for g in grads]
    marks = torch._foreach_mul(grads, 0.0)  # finite -> 0, ±inf and NaN -> NaN
    torch._foreach_add_(marks, 1.0)
    torch._foreach_sign_(marks)  # 1, and 0 where NaN (sign(NaN) is 0)
    torch._foreach_add_(marks, -1.0)  # 0, and -1 where the gradient was non-finite
    return list(torch._foreach_norm(marks, 1))  # exact 0 when all finite


class NonFiniteProbe(Probe):
    """Counts raw non-finite gradient elements, masked ones and non-finite losses."""

    name = "nonfinite"

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._counts: torch.Tensor | None = None  # (P,) float64 elements, summed over backwards
        self._totals: list[torch.Tensor] = []  # the interval's totals (with their terms)
        self._seen = False
        self._last_bad: Any = False  # did the latest backward leave a non-finite gradient?
        self._attempts = self._skipped = 0
        self._bad_attempts: Any = 0

    def _attempt(self) -> None:
        self._attempts += 1
        self._bad_attempts = self._bad_attempts + self._last_bad
        self._seen = True

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        self._attempt()

    def on_step_skipped(self, ctx: StepContext) -> None:
        for _ in range(int(ctx.payload.get("count", 1))):
            self._attempt()
        self._skipped += int(ctx.payload.get("count", 1))

    def on_after_loss(self, ctx: StepContext) -> None:
        total = ctx.payload.get("total")
        if not isinstance(total, torch.Tensor) or total.numel() != 1:
            return
        # wb.loss's detached [terms…, total], checked whole: a NaN/±Inf term makes the total
        # NaN/±Inf too (so does a weight of 0: 0·Inf is NaN). The total alone when the
        # vector was narrowed to float32, where a huge finite float64 total would overflow
        values = ctx.payload.get("values")
        if values is None or values.dtype != total.dtype:
            values = total.detach().reshape(1)
        self._totals.append(values)  # checked at the flush: no op per call
        self._seen = True

    def on_after_backward(self, ctx: StepContext) -> None:
        wb = ctx.wb
        if not wb.named_params:
            return
        self._seen = True
        if not wb.registry.observing and wb.device.type == "cpu":
            # no sampled probe reads these gradients: the fused check alone, no memo
            if all_finite_on_cpu([p.grad for p in wb.params if p.grad is not None]):
                self._last_bad = False
                return
        counts = raw_nonfinite(wb)
        if counts is None:  # CPU fast path: every norm finite
            self._last_bad = False
            return
        self._last_bad = counts.sum() > 0
        if self._counts is None or self._counts.shape != counts.shape:
            self._counts = counts
        else:
            self._counts.add_(counts)

    @staticmethod
    def _take_sanitized(wb: Any) -> int:
        """Elements sanitized since the last flush, through `wb.sanitize_` or observed at
        the step (the larger; both counters are reset)."""
        count = max(int(wb.sanitized.sum().item()), int(wb.observed_sanitized.item()))
        wb.sanitized.zero_()
        wb.observed_sanitized.zero_()
        return count

    def flush(self, ctx: StepContext) -> None:
        sanitized = self._take_sanitized(ctx.wb)
        if not self._seen and not sanitized:
            return
        record = {
            "grad_elems": int(self._counts.sum().item()) if self._counts is not None else 0,
            "params": int((self._counts > 0).sum().item()) if self._counts is not None else 0,
            "sanitized": sanitized,
            "loss": self._loss_nonfinite(),
            "step_attempts": self._attempts,
            "attempts_nonfinite": int(self._bad_attempts),
            "attempts_skipped": self._skipped,
        }
        self._attempts = self._skipped = 0
        self._bad_attempts = 0
        ctx.wb.writer.scalars(ctx.step, "nonfinite", record)
        self._counts = None
        self._seen = False

    def _loss_nonfinite(self) -> int:
        """1 if a total of the interval was NaN/±Inf (one check over all of them), else 0."""
        totals, self._totals = self._totals, []
        if not totals:
            return 0
        devices = {t.device for t in totals}
        if len(devices) > 1:
            totals = [t.cpu() for t in totals]
        return int(not bool(torch.isfinite(torch.cat(totals)).all()))
