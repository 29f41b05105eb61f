"""Cadence: how often each part of the loop ran (kind `cadence`).

The Workbench counts forward passes (of the root module, while grad is enabled), `wb.loss`
calls, backward passes (end of backward, once per backward), real optimizer steps,
`scheduler.step` calls and evaluations; this probe writes those cumulative counts once per
flush (`step` = the flush step) and at the end of the run. It touches no tensor.

Keys beyond the six basic counts (all cumulative unless noted):

* `nograd_forward` — root forwards with grad disabled (evaluation);
* `step_attempts` — optimizer steps attempted: real ones + skipped (GradScaler, wb.step_skipped);
* `loss_without_backward` — `wb.loss` calls followed by no backward before the next call
  (a loss computed but stepped once per epoch, or never);
* `steps_without_backward` — optimizer steps with no backward since the previous optimizer
  step (of any optimizer: a second optimizer stepping on the same backward counts here);
* `backward_per_step_min`, `backward_per_step_max` — over this interval's optimizer steps
  that had ≥ 1 backward since the previous step: how many (k for accumulation over k
  micro-batches; absent when the interval had no such step);
* `grads_cleared_steps`, `grads_carried_steps`, `backward_accumulating` —
  riswb.instrument.grad_clearing, summed over optimizers: steps whose gradients started
  from cleared `.grad` since the optimizer's previous step, steps whose gradients carried
  an earlier step's (zero_grad never called), and backwards that added into a non-zero
  `.grad` (accumulation within a step, or carrying);
* `opt/<i>/optimizer_step`, and with several optimizers `opt/<i>/grads_cleared_steps`,
  `opt/<i>/grads_carried_steps`, `opt/<i>/backward_accumulating` per optimizer i.

A healthy one-step-per-batch loop: loss = backward = optimizer_step, backward_per_step 1,
grads_carried_steps 0, backward_accumulating 0. Accumulation ×k (no `accumulation=` hint):
backward_per_step k, backward_accumulating ≈ (k−1)·optimizer_step, carried 0. Gradients
never cleared: grads_carried_steps ≈ optimizer_step − 1. One step per epoch: backward per
step ≈ batches per epoch, or loss_without_backward ≈ loss when the epoch's loss is summed.

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
        wb = ctx.wb
        counts = wb.counts()
        clearing = wb.grad_clearing.counts() if wb.grad_clearing is not None else None
        if clearing is not None:
            for key, name in (("cleared", "grads_cleared_steps"),
                              ("carried", "grads_carried_steps"),
                              ("accumulating", "backward_accumulating")):
                counts[name] = sum(clearing[key])
                if len(clearing[key]) > 1:
                    counts.update({f"opt/{i}/{name}": v for i, v in enumerate(clearing[key])})
        per_step = wb.take_backward_per_step()
        if counts == self._last:
            return  # nothing ran since the previous record
        self._last = dict(counts)
        if per_step:
            counts.update(backward_per_step_min=min(per_step), backward_per_step_max=max(per_step))
        wb.writer.scalars(ctx.step, "cadence", counts)
