"""Were gradients cleared between optimizer steps? Observed, not declared.

Per optimizer one watched tensor — its smallest trainable parameter that is in the model,
so the check costs next to nothing — gets a tensor hook (`param.register_hook`), which
autograd runs with the incoming gradient BEFORE accumulating it: `param.grad` there still
holds what earlier backwards left. Each firing in a backward that will write `.grad` (not in
`torch.autograd.grad`, which the term probes use) is one backward into that tensor:

* `.grad` None or all zero → the backward starts from cleared gradients (`zero_grad()` with
  either `set_to_none`, `model.zero_grad()`, `p.grad = None`, a manual `zero_()`);
* otherwise it accumulates into gradients left by an earlier backward (`accumulating`).

At the optimizer's step (pre-hook) the watch closes the step's window: when at least one
backward reached the watched tensor since the optimizer's previous step, the step counts as
`cleared` if one of them started from cleared gradients, else as `carried` (gradients of an
earlier step were stepped again: zero_grad never called). Accumulation over k micro-batches
shows as k−1 accumulating backwards per step and the step cleared; a GAN whose generator
backward also fills the discriminator's gradients is cleared as long as the discriminator's
own zero_grad precedes its backward.

Counts live on the device (one `ne(0).any()` over a small tensor per backward, OR-ed in);
on CPU they are plain host reads. Read them with `counts()` at a flush.
"""

from __future__ import annotations

from typing import Any

import torch


class GradClearWatch:
    """Cleared / carried optimizer steps and accumulating backwards, per optimizer."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], params: list[torch.Tensor]):
        trainable = {id(p) for p in params}
        self._handles: list[Any] = []
        self._watched: list[torch.Tensor | None] = []
        for optimizer in optimizers:
            own = [p for g in optimizer.param_groups for p in g["params"] if id(p) in trainable]
            watched = min(own, key=lambda p: p.numel(), default=None)
            self._watched.append(watched)
        device = params[0].device if params else torch.device("cpu")
        self._host = device.type == "cpu"
        n = len(optimizers)
        # per optimizer: backwards seen since its last step, and whether one of them started
        # from cleared gradients; Python values on CPU, device tensors (no sync) elsewhere
        self._seen = [0] * n
        self._fresh: list[Any] = [False] * n
        self._cleared: list[Any] = [0] * n
        self._carried: list[Any] = [0] * n
        self._accumulating: list[Any] = [0] * n
        for i, param in enumerate(self._watched):
            if param is not None:
                self._handles.append(param.register_hook(self._hook(i, param)))

    def _hook(self, index: int, param: torch.Tensor):
        accumulator = param.view_as(param).grad_fn.next_functions[0][0]

        def before_accumulation(_incoming: torch.Tensor) -> None:
            try:  # tensor hooks also fire in autograd.grad (the term probes), which never
                if not torch._C._will_engine_execute_node(accumulator):  # writes .grad
                    return
            except RuntimeError:  # "not supported" inside autograd.grad: not a backward
                return
            self._seen[index] += 1
            grad = param.grad
            if grad is None:
                self._fresh[index] = True
                return
            if grad.is_sparse:
                grad = grad.coalesce().values()
            nonzero = grad.detach().ne(0).any()
            if self._host:
                nonzero = bool(nonzero)
            self._accumulating[index] = self._accumulating[index] + nonzero
            self._fresh[index] = self._fresh[index] | _negate(nonzero)

        return before_accumulation

    def on_step(self, index: int) -> None:
        """Close optimizer `index`'s window at its step (pre-hook)."""
        if not self._seen[index]:
            return
        fresh = self._fresh[index]
        self._cleared[index] = self._cleared[index] + fresh
        self._carried[index] = self._carried[index] + _negate(fresh)
        self._fresh[index] = False
        self._seen[index] = 0

    def counts(self) -> dict[str, list[int]]:
        return {"cleared": [int(v) for v in self._cleared],
                "carried": [int(v) for v in self._carried],
                "accumulating": [int(v) for v in self._accumulating]}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _negate(flag: Any) -> Any:
    return (not flag) if isinstance(flag, bool) else ~flag
