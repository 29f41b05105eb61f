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
    graph: `tensors` are announced inputs that required grad and forward arguments whose
    graph reaches a model parameter; `leaf_tensors` forward arguments that were leaves
    requiring grad, or computed from such leaves only."""

    name = "inputs"
    sampled = True  # statistics over observed steps (riswb.instrument.observation)

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._flagged: dict[str, int] = {}  # announced data requiring grad, or on a graph
        self._leaves: dict[str, int] = {}  # forward arguments that are leaves requiring grad
        self._first_step: int | None = None
        self._derived: dict[str, bool] = {}  # argument -> computed from leaves only

    def _watch(self, ctx: StepContext, value, prefix: str, *, leaves_allowed: bool) -> None:
        for name, tensor in _tensors(value, prefix):
            if tensor.grad_fn is None and not tensor.requires_grad:
                continue
            # a forward argument may be a leaf that requires grad on purpose: adversarial
            # examples (FGSM/PGD) and input-gradient penalties differentiate w.r.t. it, and
            # physics-informed nets feed a function of such leaves (torch.cat of coordinates)
            on_purpose = leaves_allowed and (
                tensor.grad_fn is None or self._from_leaves(name, tensor, ctx.wb.params))
            seen = self._leaves if on_purpose else self._flagged
            seen[name] = seen.get(name, 0) + 1
            if self._first_step is None:
                self._first_step = ctx.step

    def _from_leaves(self, name: str, tensor: torch.Tensor, params: list) -> bool:
        """Whether the graph behind `tensor` reaches no model parameter: it was computed
        from the loop's own leaves (coordinates, a perturbation), not from a model output
        or an earlier step's graph. Decided once per argument and interval, from at most
        `_MAX_NODES` graph nodes (a bigger graph counts as reaching the model)."""
        known = self._derived.get(name)
        if known is None:
            known = self._derived[name] = _reaches_no_param(tensor.grad_fn, params)
        return known

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
        self._derived.clear()
        self._first_step = None


_MAX_NODES = 256


def _reaches_no_param(grad_fn, params: list) -> bool:
    """A walk over the autograd graph from `grad_fn`: False as soon as a gradient
    accumulator of one of `params` is met, or after `_MAX_NODES` nodes."""
    owned = {id(p) for p in params}
    queue, seen = [grad_fn], {id(grad_fn)}
    while queue:
        if len(seen) > _MAX_NODES:
            return False
        node = queue.pop()
        variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf
        if variable is not None and id(variable) in owned:
            return False
        for child, _ in node.next_functions:
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                queue.append(child)
    return True
