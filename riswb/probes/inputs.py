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
    """Writes a `grad_into_inputs` event ({"tensors", "count", "first_step", "leaf_tensors",
    "leaf_count"}) per interval in which some watched input required grad or hung off a
    graph: `tensors` are announced inputs that required grad and forward arguments that
    carried a grad_fn; `leaf_tensors` forward arguments that were leaves requiring grad."""

    name = "inputs"
    sampled = True  # statistics over observed steps (riswb.instrument.observation)

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._flagged: dict[str, int] = {}  # announced data requiring grad, or on a graph
        self._leaves: dict[str, int] = {}  # forward arguments that are leaves requiring grad
        self._first_step: int | None = None

    def _watch(self, ctx: StepContext, value, prefix: str, *, leaves_allowed: bool) -> None:
        for name, tensor in _tensors(value, prefix):
            if tensor.grad_fn is None and not tensor.requires_grad:
                continue
            # a forward argument may be a leaf that requires grad on purpose: adversarial
            # examples (FGSM/PGD) and input-gradient penalties differentiate w.r.t. it
            seen = self._leaves if leaves_allowed and tensor.grad_fn is None else self._flagged
            seen[name] = seen.get(name, 0) + 1
            if self._first_step is None:
                self._first_step = ctx.step

    def on_batch_start(self, ctx: StepContext) -> None:
        self._watch(ctx, ctx.payload.get("inputs"), "", leaves_allowed=False)

    def on_after_forward(self, ctx: StepContext) -> None:
        self._watch(ctx, ctx.payload.get("inputs"), "forward", leaves_allowed=True)
        self._watch(ctx, ctx.payload.get("kwargs"), "forward", leaves_allowed=True)

    def flush(self, ctx: StepContext) -> None:
        if not self._flagged and not self._leaves:
            return
        ctx.wb.writer.event(ctx.step, "grad_into_inputs", tensors=sorted(self._flagged),
                            count=sum(self._flagged.values()), first_step=self._first_step,
                            leaf_tensors=sorted(self._leaves),
                            leaf_count=sum(self._leaves.values()))
        self._flagged.clear()
        self._leaves.clear()
        self._first_step = None
