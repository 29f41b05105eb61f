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
  `opt/<i>/grads_carried_steps`, `opt/<i>/backward_accumulating` per optimizer i;
* `closure_steps` — optimizer steps given a closure (`optimizer.step(closure)`: LBFGS, SAM
  implementations), whose loss/backward run inside the step, as often as the optimizer wants;
* `same_batch_loss` — `wb.loss` calls that re-evaluated a batch already counted, in step
  windows (from one optimizer step to the next, of any optimizer): in a window whose
  grad-enabled root forwards all took the same, unmodified input tensor (one forward with a
  loss and backward per head; SAM's second pass on the same batch), every call beyond the
  first; in a closure step, the calls INSIDE `optimizer.step(closure)` (between the step's
  pre- and post-hook) beyond the first — the line search re-evaluating one batch. Calls
  before the step in the same window are separate micro-batches: Lightning's
  `accumulate_grad_batches=k` runs k−1 of them outside the step and the k-th in its closure.
  `loss − same_batch_loss` counts batches; `same_batch_backward` likewise counts the
  backwards beyond the first (of the window, or of the closure step);
* `shared_backward_steps` — steps of an optimizer that had a backward since its own previous
  step but none since another optimizer's step just before: several optimizers (SparseAdam
  for embeddings + Adam for the rest) stepping on one backward, one update of the model.

A healthy one-step-per-batch loop: loss = backward = optimizer_step, backward_per_step 1,
grads_carried_steps 0, backward_accumulating 0. Accumulation ×k (no `accumulation=` hint):
backward_per_step k, backward_accumulating ≈ (k−1)·optimizer_step, carried 0. Gradients
never cleared: grads_carried_steps ≈ optimizer_step − 1. One step per epoch: backward per
step ≈ batches per epoch, or loss_without_backward ≈ loss when the epoch's loss is summed.

`step-cadence` compares `optimizer_step` with `loss / intent.accumulation` (docs/failures.md #1: one
update per epoch instead of one per batch; docs/failures.md #9: a loss computed but never stepped).
"""

from __future__ import annotations

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.tensor_mark import TensorMark, mark, unchanged


def _first_tensor(payload: dict) -> torch.Tensor | None:
    for value in (*payload.get("inputs", ()), *(payload.get("kwargs") or {}).values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


class CadenceProbe(Probe):
    """Cumulative forward/loss/backward/optimizer_step/scheduler_step/eval counts."""

    name = "cadence"

    def __init__(self, every: int | None = None):
        super().__init__(every)
        # the step windows below must see every forward and step: a schedule would merge
        # windows and read several batches as one (the counts themselves cost nothing)
        self.every = 1
        self._last: dict[str, int] | None = None
        self._closure_steps = self._same_batch_loss = self._same_batch_backward = 0
        self._shared_steps = 0
        # the current step window: loss count at its start, its forwards, and the input of
        # its first forward (a weak reference and the tensor's version: a batch copied into
        # a reused buffer is a new batch, the same object re-fed unmodified is not)
        self._window_loss = 0
        self._forwards = 0
        self._input: TensorMark | None = None
        self._one_input = True
        # loss and backward counts at the current step's pre-hook: a closure's calls run
        # between the pre- and post-hook, the micro-batches accumulated before it do not
        self._at_pre_step: tuple[int, int] | None = None
        self._last_opt: int | None = None
        self._backward_at_step: dict[int, int] = {}  # optimizer -> n_backward at its step
        self._backward_at_last = 0

    def on_after_forward(self, ctx: StepContext) -> None:
        tensor = _first_tensor(ctx.payload)
        self._forwards += 1
        if tensor is None:
            self._one_input = False
        elif self._input is None:
            self._input = mark(tensor)
        elif not unchanged(self._input, tensor):
            self._one_input = False

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        self._at_pre_step = (ctx.wb.n_loss, ctx.wb.n_backward)

    def on_after_optimizer_step(self, ctx: StepContext) -> None:
        wb, index = ctx.wb, ctx.payload.get("optimizer", 0)
        closure = bool(ctx.payload.get("closure"))
        self._closure_steps += closure
        losses = wb.n_loss - self._window_loss
        if losses > 1 and self._forwards and self._one_input:
            # one input tensor fed to every forward of the window: one batch
            self._same_batch_loss += losses - 1
            self._same_batch_backward += max(0, wb.n_backward - self._backward_at_last - 1)
        elif closure:
            # only the closure's own calls re-evaluate one batch; losses before the step
            # (accumulated micro-batches) are batches of their own
            loss_at, backward_at = self._at_pre_step or (self._window_loss,
                                                         self._backward_at_last)
            inside = wb.n_loss - max(loss_at, self._window_loss)
            if inside > 1:
                self._same_batch_loss += inside - 1
                self._same_batch_backward += max(
                    0, wb.n_backward - max(backward_at, self._backward_at_last) - 1)
        self._at_pre_step = None
        own_backward = wb.n_backward > self._backward_at_step.get(index, 0)
        if (self._last_opt is not None and self._last_opt != index and own_backward
                and wb.n_backward == self._backward_at_last):
            self._shared_steps += 1
        self._backward_at_step[index] = self._backward_at_last = wb.n_backward
        self._last_opt = index
        self._window_loss = wb.n_loss
        self._forwards, self._input, self._one_input = 0, None, True

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
        counts.update(closure_steps=self._closure_steps,
                      same_batch_loss=self._same_batch_loss,
                      same_batch_backward=self._same_batch_backward,
                      shared_backward_steps=self._shared_steps)
        per_step = wb.take_backward_per_step()
        if counts == self._last:
            return  # nothing ran since the previous record
        self._last = dict(counts)
        if per_step:
            counts.update(backward_per_step_min=min(per_step), backward_per_step_max=max(per_step))
        wb.writer.scalars(ctx.step, "cadence", counts)
