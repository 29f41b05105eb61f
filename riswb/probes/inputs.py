"""Inputs and targets that carry gradient (finding `grad-into-inputs`, docs/failures.md #22).

Data tensors should be leaves without `requires_grad`: an R_samp whose `.detach()` was
removed "to let gradients flow" makes backward walk into the data pipeline and keeps every
batch's graph alive. Watched tensors: the model's forward arguments, positional
(`forward[0]`, ...) and keyword (`forward.input_ids`: Hugging Face models take their
inputs and labels as keywords), and the named tensors
a loop announces with `wb.emit(Event.BATCH_START, inputs={"R_samp": ..., ...})`. Checking
`requires_grad`/`grad_fn` reads Python attributes only: no host sync.
"""

from __future__ import annotations

import torch

from riswb.instrument.hooks import Probe, StepContext


def _tensors(value, prefix: str):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{key}" if not prefix else f"{prefix}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{prefix}[{index}]")


class InputsProbe(Probe):
    """Writes a `grad_into_inputs` event ({"tensors", "count", "first_step"}) per interval
    in which some watched input required grad or hung off a graph."""

    name = "inputs"

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._flagged: dict[str, int] = {}
        self._first_step: int | None = None

    def _watch(self, ctx: StepContext, value, prefix: str) -> None:
        for name, tensor in _tensors(value, prefix):
            if tensor.requires_grad or tensor.grad_fn is not None:
                self._flagged[name] = self._flagged.get(name, 0) + 1
                if self._first_step is None:
                    self._first_step = ctx.step

    def on_batch_start(self, ctx: StepContext) -> None:
        self._watch(ctx, ctx.payload.get("inputs"), "")

    def on_after_forward(self, ctx: StepContext) -> None:
        self._watch(ctx, ctx.payload.get("inputs"), "forward")
        self._watch(ctx, ctx.payload.get("kwargs"), "forward")

    def flush(self, ctx: StepContext) -> None:
        if not self._flagged:
            return
        ctx.wb.writer.event(ctx.step, "grad_into_inputs", tensors=sorted(self._flagged),
                            count=sum(self._flagged.values()), first_step=self._first_step)
        self._flagged.clear()
        self._first_step = None
