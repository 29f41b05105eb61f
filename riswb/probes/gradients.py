"""Raw-gradient kernels shared by every gradient probe.

`raw_grad_stats` computes the per-tensor norms of the trainable gradients once per backward
(one `torch._foreach_norm`), memoised through `wb.cached`, so GradNorms, NonFinite and
DeadParams pay for it once between them. `ModuleIndex` maps each trainable tensor to its
top-level module; `device_index` keeps index tensors resident on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from riswb.probes.params import top_module

_CACHE_KEY = "riswb.raw_grad_stats"


@dataclass
class GradStats:
    """Raw gradients of the trainable tensors at one AFTER_BACKWARD.

    grads: the `.grad` of each trainable tensor (None where it has none), in
    `wb.named_params` order; norms: (P,) float32 on the first parameter's device, ‖g‖₂ per
    tensor (0 for a None grad; NaN/Inf if the grad holds one); present: P booleans;
    inverse_scale: 1/scale of the GradScaler whose `scale(loss)` this backward ran under (a
    device scalar), else None; unscaled: norms × inverse_scale (norms itself without one).
    """

    grads: list[torch.Tensor | None]
    norms: torch.Tensor
    present: list[bool]
    inverse_scale: torch.Tensor | None = None
    unscaled: torch.Tensor | None = None


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


def tensor_norms(grads: list[torch.Tensor | None], device: torch.device) -> torch.Tensor:
    present = [g for g in grads if g is not None]
    out_len = len(grads)
    if not present:
        return torch.zeros(out_len, device=device)
    if any(g.is_sparse for g in present):
        norms = [torch.linalg.vector_norm(g.coalesce().values() if g.is_sparse else g)
                 for g in present]
    else:
        norms = list(torch._foreach_norm(present))
    try:  # one device (the usual case): stack, then one check of the result
        stacked = torch.stack(norms)
    except RuntimeError:  # tensors on several devices
        stacked = torch.stack([n.to(device) for n in norms])
    if stacked.dtype != torch.float32 or stacked.device != device:
        stacked = stacked.to(device=device, dtype=torch.float32)
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
    same raw numbers, and pays for one `_foreach_norm` between them (and one multiply
    when a GradScaler is in use).
    """

    def compute() -> GradStats:
        grads = [p.grad for _, p in wb.named_params]
        norms = tensor_norms(grads, _param_device(wb))
        inverse = wb.scaler.inverse()
        unscaled = norms if inverse is None else norms * inverse.to(norms.device)
        return GradStats(grads, norms, [g is not None for g in grads], inverse, unscaled)

    return wb.cached(_CACHE_KEY, compute)


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
