"""Raw gradient norms: the total and one per top-level child module (kind `grad_norm`).

Read at AFTER_BACKWARD, i.e. at the end of `loss.backward()` and before the user's own
sanitize/clip code, so the numbers are the *raw* gradients (FAILURES 12, 18).

This module also owns the per-step statistics that every gradient probe shares
(`raw_grad_stats`): one `torch._foreach_norm` over the trainable gradients per backward,
memoised through `wb.cached`, so GradNorms, NonFinite and DeadParams pay for it once.

Record (one per flush, `step` = the flush step): `total` and `module/<name>` are the *mean*
over the backward passes since the previous record of ‖g‖₂ over all trainable tensors and
over the tensors of each top-level child module (`name` is the first component of the
parameter name, so a parameter that sits directly on the root module is its own "module").
A tensor whose grad is None contributes 0. A NaN/Inf gradient makes the mean NaN/Inf: the
numbers are raw on purpose; kind `nonfinite` counts the elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from riswb.hooks import Probe, StepContext

_CACHE_KEY = "riswb.raw_grad_stats"


@dataclass
class GradStats:
    """Raw gradients of the trainable tensors at one AFTER_BACKWARD.

    grads: the `.grad` of each trainable tensor (None where it has none), in
    `wb.named_params` order; norms: (P,) float32 on the first parameter's device, ‖g‖₂ per
    tensor (0 for a None grad; NaN/Inf if the grad holds one); present: P booleans.
    """

    grads: list[torch.Tensor | None]
    norms: torch.Tensor
    present: list[bool]


def _norms(grads: list[torch.Tensor | None], device: torch.device) -> torch.Tensor:
    present = [g for g in grads if g is not None]
    out_len = len(grads)
    if not present:
        return torch.zeros(out_len, device=device)
    if any(g.is_sparse for g in present):
        norms = [torch.linalg.vector_norm(g.coalesce().values()) for g in present]
    else:
        norms = list(torch._foreach_norm(present))
    if all(n.device == device and n.dtype == torch.float32 for n in norms):
        stacked = torch.stack(norms)
    else:
        stacked = torch.stack([n.to(device=device, dtype=torch.float32) for n in norms])
    if len(present) == out_len:
        return stacked
    index = torch.tensor([i for i, g in enumerate(grads) if g is not None], device=device)
    return torch.zeros(out_len, device=device).index_copy_(0, index, stacked)


def _param_device(wb: Any) -> torch.device:
    params = wb.named_params
    return params[0][1].device if params else torch.device("cpu")


def raw_grad_stats(wb: Any) -> GradStats:
    """Per-tensor raw gradient norms for this backward, computed once and shared.

    Uses the Workbench's own memoised `wb.grad_norms()` when it has one (so probes of
    other authors share the same `_foreach_norm`), else computes it here. The Workbench
    clears its memo at the end of every backward, after sanitize/clip and at each step.
    """

    def compute() -> GradStats:
        grads = [p.grad for _, p in wb.named_params]
        shared = getattr(wb, "grad_norms", None)
        norms = shared() if callable(shared) else _norms(grads, _param_device(wb))
        return GradStats(grads, norms, [g is not None for g in grads])

    cached = getattr(wb, "cached", None)
    return compute() if cached is None else cached(_CACHE_KEY, compute)


def top_module(name: str) -> str:
    """The top-level child module of a parameter name ("encoder.0.weight" -> "encoder")."""
    return name.split(".", 1)[0]


class ModuleIndex:
    """Which top-level module each trainable tensor belongs to, built once per param list."""

    def __init__(self, named_params: list[tuple[str, torch.Tensor]], device: torch.device):
        self.key = tuple(id(p) for _, p in named_params)
        self.names: list[str] = []
        owner: list[int] = []
        for name, _ in named_params:
            module = top_module(name)
            if module not in self.names:
                self.names.append(module)
            owner.append(self.names.index(module))
        self.owner = torch.tensor(owner, dtype=torch.long, device=device)
        self.numel = torch.tensor(
            [float(p.numel()) for _, p in named_params], device=device, dtype=torch.float64
        )

    @classmethod
    def of(cls, wb: Any, current: ModuleIndex | None) -> ModuleIndex:
        params = wb.named_params
        if current is not None and current.key == tuple(id(p) for _, p in params):
            return current
        return cls(params, _param_device(wb))


class GradNormsProbe(Probe):
    """Total and per-top-level-module raw gradient norms, averaged per flush interval."""

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._index: ModuleIndex | None = None
        self._slot: torch.Tensor | None = None  # 1 + module index of each tensor
        self._acc: torch.Tensor | None = None  # (1 + M,): total, then one per module
        self._count = 0

    def on_after_backward(self, ctx: StepContext) -> None:
        if not ctx.wb.named_params:
            return
        index = ModuleIndex.of(ctx.wb, self._index)
        if index is not self._index:
            self._index, self._slot = index, index.owner + 1
            self._acc, self._count = None, 0  # the parameter set changed: restart the mean
        squares = raw_grad_stats(ctx.wb).norms.square()
        # index_add keeps a NaN inside its own module (a matmul would spread 0·NaN = NaN)
        norms = torch.zeros(len(index.names) + 1, device=squares.device)
        norms.index_add_(0, self._slot, squares)
        norms[0] = squares.sum()
        norms.sqrt_()
        if self._acc is None:
            self._acc = norms
        else:
            self._acc.add_(norms)
        self._count += 1

    def flush(self, ctx: StepContext) -> None:
        if not self._count or self._acc is None or self._index is None:
            return
        values = (self._acc / self._count).tolist()
        record = {"total": values[0]}
        record.update({f"module/{m}": v for m, v in zip(self._index.names, values[1:])})
        ctx.wb.writer.scalars(ctx.step, "grad_norm", record)
        self._acc = None
        self._count = 0
