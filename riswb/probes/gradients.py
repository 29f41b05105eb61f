"""Raw-gradient kernels shared by every gradient probe.

`raw_grad_stats` computes the per-tensor norms of the trainable gradients once per backward
(one `torch._foreach_norm`), memoised through `wb.cached`, so GradNorms, NonFinite and
DeadParams pay for it once between them. `ModuleIndex` maps each trainable tensor to its
top-level module; `device_index` keeps index tensors resident on the device.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch

from riswb.probes.params import top_module

_CACHE_KEY = "riswb.raw_grad_stats"


class GradStats:
    """Raw gradients of the trainable tensors at one AFTER_BACKWARD.

    grads: the `.grad` of each trainable tensor (None where it has none), in
    `wb.named_params` order; present: P booleans; inverse_scale: 1/scale of the GradScaler
    whose `scale(loss)` this backward ran under (a device scalar), else None.
    Everything else is computed on first use, so it describes the gradients as they are
    then: read it during AFTER_BACKWARD (a probe keeping the stats past it takes what it
    needs at once). On the cycles the sampled probes skip only the non-finite check reads
    this, and on CPU it needs no norms (`host_finite`):
    present_norms: ‖g‖₂ of each present gradient (one `_foreach_norm`);
    norms: (P,) float32 on the first parameter's device, ‖g‖₂ per tensor (0 for a None
    grad; NaN/Inf if the grad holds one); unscaled: norms × inverse_scale (norms itself
    without a scaler).
    """

    def __init__(self, grads: list[torch.Tensor | None], device: torch.device,
                 inverse_scale: torch.Tensor | None):
        self.grads = grads
        self.present = [g is not None for g in grads]
        self.inverse_scale = inverse_scale
        self._device = device
        self._present_norms: list[torch.Tensor] | None = None
        self._norms: torch.Tensor | None = None
        self._unscaled: torch.Tensor | None = None

    @property
    def present_norms(self) -> list[torch.Tensor]:
        if self._present_norms is None:
            self._present_norms = present_norms([g for g in self.grads if g is not None])
        return self._present_norms

    @property
    def norms(self) -> torch.Tensor:
        if self._norms is None:
            self._norms = stacked_norms(self.present_norms, self.present, self._device)
        return self._norms

    @property
    def unscaled(self) -> torch.Tensor:
        if self._unscaled is None:
            inverse = self.inverse_scale
            self._unscaled = (self.norms if inverse is None
                              else self.norms * inverse.to(self._device))
        return self._unscaled

    def host_finite(self) -> bool:
        """True when the gradients live on the CPU and hold no NaN/Inf, read on the host.
        False says "look closer": something is non-finite, or the gradients live on an
        accelerator (a read would wait for it). Norms already taken are read as they are;
        otherwise one fused finiteness check (no norms) answers for dense gradients."""
        if self._device.type != "cpu":
            return False
        if self._present_norms is None:
            finite = all_finite_on_cpu([g for g in self.grads if g is not None])
            if finite is not None:
                return finite
        # norms are ≥ 0: their sum is finite when every norm is (a sum that overflowed
        # sends the caller to count the elements, which finds none)
        return math.isfinite(sum(n.item() for n in self.present_norms))


_FLAGS = threading.local()  # per thread: (found, unit) for the fused check


def all_finite_on_cpu(grads: list[torch.Tensor]) -> bool | None:
    """Whether CPU `grads` hold no NaN/Inf: AMP's fused check (one kernel over every tensor,
    one read; it multiplies by 1, which changes no value and bumps no version counter).
    None where the kernel does not apply (sparse, complex or integer tensors, another
    device, a torch without it), which it says by raising, and under torch.distributed,
    where that write could race an all-reduce still filling the gradient buckets: the
    caller takes the norms, which only read."""
    if not grads:
        return True
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return None
    flags = getattr(_FLAGS, "flags", None)
    if flags is None:  # explicit: a loop may have changed torch's default device or dtype
        found = torch.zeros(1, dtype=torch.float32, device="cpu")
        # the flag is read through a numpy view of its memory: `.item()` is a torch op
        flags = _FLAGS.flags = (found, torch.ones(1, dtype=torch.float32, device="cpu"),
                                found.numpy())
    found, unit, found_on_host = flags
    try:
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, unit)
    except (RuntimeError, NotImplementedError):
        found.zero_()
        return None
    if found_on_host[0]:
        found.zero_()
        return False
    return True


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


def present_norms(present: list[torch.Tensor]) -> list[torch.Tensor]:
    """‖g‖₂ of each of `present` (no None): one fused op for dense gradients."""
    if not present:
        return []
    if any(g.is_sparse for g in present):
        return [torch.linalg.vector_norm(g.coalesce().values() if g.is_sparse else g)
                for g in present]
    return list(torch._foreach_norm(present))


def stacked_norms(norms: list[torch.Tensor], present: list[bool],
                  device: torch.device) -> torch.Tensor:
    """(P,) float32 on `device`: `norms` (those of the present gradients) in place, 0 for
    the absent ones."""
    out_len = len(present)
    if not norms:
        return torch.zeros(out_len, device=device)
    try:  # one device (the usual case): stack, then one check of the result
        stacked = torch.stack(norms)
    except RuntimeError:  # tensors on several devices
        stacked = torch.stack([n.to(device) for n in norms])
    if stacked.dtype != torch.float32 or stacked.device != device:
        stacked = stacked.to(device=device, dtype=torch.float32)
    if len(norms) == out_len:
        return stacked
    index = device_index(tuple(i for i, there in enumerate(present) if there), device)
    return torch.zeros(out_len, device=device).index_copy_(0, index, stacked)


def tensor_norms(grads: list[torch.Tensor | None], device: torch.device) -> torch.Tensor:
    """(P,) float32 ‖g‖₂ of `grads` on `device`, 0 for None."""
    return stacked_norms(present_norms([g for g in grads if g is not None]),
                         [g is not None for g in grads], device)


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
        return GradStats(grads, _param_device(wb), wb.scaler.inverse())

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
