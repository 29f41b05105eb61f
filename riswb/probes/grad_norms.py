"""Raw gradient norms: the total and one per top-level child module (kind `grad_norm`).

Read at AFTER_BACKWARD, i.e. at the end of `loss.backward()` and before the user's own
sanitize/clip code, so the numbers are the *raw* gradients (docs/failures.md #12, 18).

This module also owns the per-step statistics that every gradient probe shares
(`raw_grad_stats`): one `torch._foreach_norm` over the trainable gradients per backward,
memoised through `wb.cached`, so GradNorms, NonFinite and DeadParams pay for it once.

Record (one per flush, `step` = the flush step): `total` and `module/<name>` are the
root-mean-square over the backward passes since the previous record of ‖g‖₂ over all
trainable tensors and over the tensors of each top-level child module (`name` is the first
component of the parameter name, so a parameter that sits directly on the root module is
its own "module"): √(mean_steps ‖g‖²). The RMS costs one fused op per step (Σ ‖g_p‖² per
tensor); the module sums and square roots wait for the flush.
A tensor whose grad is None contributes 0. A NaN/Inf gradient makes the mean NaN/Inf: the
numbers are raw on purpose; kind `nonfinite` counts the elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext

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


_INDEX_CACHE: dict[tuple, torch.Tensor] = {}


def device_index(indices: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A long tensor of `indices` on `device`, cached: a fresh host→device copy every step
    would be a synchronising (pageable) transfer on CUDA."""
    key = (str(device), indices)
    found = _INDEX_CACHE.get(key)
    if found is None:
        if len(_INDEX_CACHE) > 256:
            _INDEX_CACHE.clear()
        found = _INDEX_CACHE[key] = torch.tensor(indices, dtype=torch.long, device=device)
    return found


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
    elif all(n.device == device for n in norms) and len({n.dtype for n in norms}) == 1:
        stacked = torch.stack(norms).float()
    else:
        stacked = torch.stack([n.to(device=device, dtype=torch.float32) for n in norms])
    if len(present) == out_len:
        return stacked
    index = device_index(tuple(i for i, g in enumerate(grads) if g is not None), device)
    return torch.zeros(out_len, device=device).index_copy_(0, index, stacked)


def _param_device(wb: Any) -> torch.device:
    params = wb.named_params
    return params[0][1].device if params else torch.device("cpu")


def raw_grad_stats(wb: Any) -> GradStats:
    """Per-tensor raw gradient norms for this backward, computed once and shared.

    Memoised through `wb.cached`, which the Workbench clears at the end of every backward,
    after sanitize/clip and at each step: every probe reading it at AFTER_BACKWARD sees the
    same raw numbers, and pays for one `_foreach_norm` between them.
    """

    def compute() -> GradStats:
        grads = [p.grad for _, p in wb.named_params]
        norms = _norms(grads, _param_device(wb))
        return GradStats(grads, norms, [g is not None for g in grads])

    cached = getattr(wb, "cached", None)
    return compute() if cached is None else cached(_CACHE_KEY, compute)


def top_module(name: str) -> str:
    """The top-level child module of a parameter name ("encoder.0.weight" -> "encoder")."""
    return name.split(".", 1)[0]


class ModuleIndex:
    """Which top-level module each trainable tensor belongs to, built once per param list."""

    def __init__(self, named_params: list[tuple[str, torch.Tensor]], device: torch.device):
        self.source, self.length = named_params, len(named_params)
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
        if current is not None and current.source is params and current.length == len(params):
            return current
        return cls(params, _param_device(wb))


class GradNormsProbe(Probe):
    """Total and per-top-level-module raw gradient norms, RMS over each flush interval."""

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._index: ModuleIndex | None = None
        self._squares: torch.Tensor | None = None  # (P,) Σ over backwards of ‖g_p‖²
        self._count = 0

    def on_after_backward(self, ctx: StepContext) -> None:
        if not ctx.wb.named_params:
            return
        index = ModuleIndex.of(ctx.wb, self._index)
        norms = raw_grad_stats(ctx.wb).norms
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
