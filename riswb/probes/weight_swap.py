"""Parameters that changed outside optimizer.step (event `weights_swapped`).

docs/failures.md #19: EMA weights swapped in for validation and never swapped back;
#20: an SWA swap-in that changed nothing. The probe keeps a fingerprint of the trainable tensors —
the bits of a strided sample of at most `max_elems` elements per tensor (live views, copied
by ONE `torch.cat` when the parameters share a dtype and device and are contiguous, which is
the usual case; otherwise each view is flattened and widened to int64 first),
compared bit for bit (NaN weights compare equal to themselves) — taken after every
optimizer step, and compares it:

* before the next optimizer step (device-side, no sync: the flags are read at the flush);
* at `wb.evaluate` / Event.EVAL, and on the trainer's `weights_swap_in`/`weights_swap_out`
  events (rare, so these compare on the host at once). Emit `weights_swap_in` right *after*
  the weights were swapped in and `weights_swap_out` right after they were swapped back:
  that is what lets a swap that changed nothing be seen.

Event `weights_swapped` (step = where the change was first seen):

* `kind`           — the swap event's `kind` ("ema", "swa"), "unknown" for an undeclared
  change, "storage" when parameter storage was replaced (`p.data = ...`);
* `params_changed` — trainable tensors whose fingerprint differed from the last step's;
* `restored`       — whether the weights the optimizer left were back when training resumed
  (checked at swap_out, else before the next optimizer step, else at run end);
* `noop`           — a declared swap_in that changed nothing (restored is then true);
* extras: `detected` (eval | swap_in | swap_out | optimizer_step | flush) and `resolved`
  (swap_in | swap_out | optimizer_step | run_end | flush); `steps_changed` for changes
  found between optimizer steps (one event per run of consecutive flush intervals).

A swap for evaluation that is restored before training resumes gives one event with
restored=true (not a finding); an unrestored one gives restored=false.
"""

from __future__ import annotations

from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.bits import as_bits


class WeightSwapProbe(Probe):
    """Detects parameter changes outside optimizer.step and whether they were undone."""

    name = "weight_swap"

    def __init__(self, every: int | None = None, *, max_elems: int = 128):
        super().__init__(every)
        if max_elems < 1:
            raise ValueError("max_elems must be >= 1")
        self.max_elems = max_elems
        self._views: list[torch.Tensor] = []
        self._ptrs: list[int] = []
        self._single = False
        self._owner: torch.Tensor | None = None  # (E,) which tensor each sampled element is
        self._ref: torch.Tensor | None = None
        self._pending: dict[str, Any] | None = None
        self._masks: list[tuple[int, torch.Tensor]] = []  # (step, changed-element mask)
        self._reduced: list[tuple[list[int], torch.Tensor]] = []  # (steps, changed tensors)
        self._episode = False

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "max_elems": self.max_elems}

    # -- fingerprints -----------------------------------------------------------------------

    def _build(self, params: list[torch.Tensor]) -> None:
        self._reduce_masks()  # pending masks belong to the old sample layout
        # live integer views of each sample, flat where the layout allows, so that a
        # fingerprint is usually one `cat` and nothing else
        self._views = [_flat_if_possible(as_bits(_sample_view(p.detach(), self.max_elems)))
                       for p in params]
        self._ptrs = [p.data_ptr() for p in params]
        kinds = {(v.dtype, v.device) for v in self._views}
        self._single = len(kinds) == 1 and all(v.dim() == 1 for v in self._views)
        device = self._views[0].device if self._views else torch.device("cpu")
        owner = [i for i, v in enumerate(self._views) for _ in range(v.numel())]
        self._owner = torch.tensor(owner, dtype=torch.long, device=device)

    def _fingerprint(self) -> torch.Tensor:
        """(E,) integers: the bits of every sampled element, tensor after tensor."""
        if self._single:
            return torch.cat(self._views)
        device = self._views[0].device
        return torch.cat([v.reshape(-1).to(device=device, dtype=torch.int64)
                          for v in self._views])

    def _reduce_masks(self) -> None:
        """Pending per-step element masks -> per-step counts of changed tensors (on device)."""
        if self._masks:
            masks, self._masks = self._masks, []
            counts = self._tensors_changed(torch.stack([m for _, m in masks]))
            self._reduced.append(([step for step, _ in masks], counts))

    def _tensors_changed(self, mask: torch.Tensor) -> torch.Tensor:
        """(..., E) element mask -> (...) count of tensors with at least one changed element."""
        counts = mask.new_zeros((*mask.shape[:-1], len(self._views)), dtype=torch.int32)
        counts.index_add_(-1, self._owner, mask.to(torch.int32))
        return (counts > 0).sum(-1)

    def _storage_moved(self, params: list[torch.Tensor]) -> int:
        ptrs = [p.data_ptr() for p in params]
        moved = abs(len(ptrs) - len(self._ptrs))
        moved += sum(a != b for a, b in zip(ptrs, self._ptrs, strict=False))
        if moved:
            self._build(params)
        return moved

    def _count_changed(self, params: list[torch.Tensor]) -> int:
        """Tensors that differ from the post-step reference (host sync: rare events only)."""
        self._storage_moved(params)
        if self._ref is None or not self._views:
            return 0
        now = self._fingerprint()
        if now.shape != self._ref.shape:
            return len(self._views)
        return int(self._tensors_changed(now != self._ref))

    # -- events -----------------------------------------------------------------------------

    def on_run_start(self, ctx: StepContext) -> None:
        if ctx.wb.params:
            self._build(ctx.wb.params)
            self._ref = self._fingerprint()

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        if self._ref is None:
            return
        if self._pending is not None:
            self._resolve(ctx, "optimizer_step")
            return
        now = self._fingerprint()
        if now.device.type == "cpu" and torch.equal(now, self._ref):
            return  # a host read costs nothing on CPU: keep masks for changes only
        # element masks, reduced to changed-tensor counts in batches (no per-step reduction)
        self._masks.append((ctx.step, now != self._ref))
        if len(self._masks) >= _MASK_BATCH:
            self._reduce_masks()

    def on_after_optimizer_step(self, ctx: StepContext) -> None:
        if self._views:
            self._ref = self._fingerprint()

    def on_eval(self, ctx: StepContext) -> None:
        if self._pending is None:
            self._detect(ctx, "unknown", "eval")

    def on_weights_swap_in(self, ctx: StepContext) -> None:
        kind = str(ctx.payload.get("kind", "unknown"))
        if self._pending is not None:
            return
        if not self._detect(ctx, kind, "swap_in"):
            self._write(ctx.step, kind, 0, restored=True, noop=True, detected="swap_in",
                        resolved="swap_in", wb=ctx.wb)

    def on_weights_swap_out(self, ctx: StepContext) -> None:
        if self._pending is None:
            self._detect(ctx, str(ctx.payload.get("kind", "unknown")), "swap_out")
            return
        if self._count_changed(ctx.wb.params) == 0:
            self._resolve(ctx, "swap_out", changed=0)

    def on_run_end(self, ctx: StepContext) -> None:
        if self._pending is not None:
            self._resolve(ctx, "run_end")

    def flush(self, ctx: StepContext) -> None:
        wb = ctx.wb
        self._reduce_masks()  # before any rebuild below changes which tensor owns an element
        if self._ref is not None and self._pending is None:
            moved = self._storage_moved(wb.params)
            if moved:
                self._write(ctx.step, "storage", moved, restored=False, noop=False,
                            detected="flush", resolved="flush", wb=wb)
                self._ref = self._fingerprint()
        if not self._reduced:
            return
        reduced, self._reduced = self._reduced, []
        steps = [step for chunk, _ in reduced for step in chunk]
        counts = torch.cat([c for _, c in reduced]).tolist()
        changed = [(step, n) for step, n in zip(steps, counts, strict=True) if n > 0]
        if changed and not self._episode:
            self._write(changed[0][0], "unknown", max(n for _, n in changed), restored=False,
                        noop=False, detected="optimizer_step", resolved="optimizer_step",
                        wb=wb, steps_changed=len(changed))
        self._episode = bool(changed)

    # -- helpers ----------------------------------------------------------------------------

    def _detect(self, ctx: StepContext, kind: str, where: str) -> bool:
        if self._ref is None:
            return False
        changed = self._count_changed(ctx.wb.params)
        if changed:
            self._pending = {"step": ctx.step, "kind": kind, "params_changed": changed,
                             "detected": where}
        return bool(changed)

    def _resolve(self, ctx: StepContext, where: str, changed: int | None = None) -> None:
        pending, self._pending = self._pending, None
        if changed is None:
            changed = self._count_changed(ctx.wb.params)
        self._write(pending["step"], pending["kind"], pending["params_changed"],
                    restored=changed == 0, noop=False, detected=pending["detected"],
                    resolved=where, wb=ctx.wb)
        if changed and where != "run_end":
            self._ref = self._fingerprint()  # reported once; training goes on from here

    @staticmethod
    def _write(step: int, kind: str, params_changed: int, *, restored: bool, noop: bool,
               detected: str, resolved: str, wb: Any, **extra: Any) -> None:
        wb.writer.event(step, "weights_swapped", kind=kind, params_changed=int(params_changed),
                        restored=bool(restored), noop=bool(noop), detected=detected,
                        resolved=resolved, **extra)


_MASK_BATCH = 64  # steps of masks held before they are reduced (bounds the memory)


def _sample_view(data: torch.Tensor, max_elems: int) -> torch.Tensor:
    """A live view of at most ~`max_elems` evenly strided elements of `data`."""
    if data.numel() <= max_elems:
        return data
    if data.is_contiguous():
        return data.view(-1)[:: -(-data.numel() // max_elems)]
    per_dim = max(1, int(max_elems ** (1.0 / data.dim())))  # a strided grid over every dim
    return data[tuple(slice(None, None, -(-size // per_dim)) for size in data.shape)]


def _flat_if_possible(view: torch.Tensor) -> torch.Tensor:
    """`view` as 1-D when that is still a view of the same memory (reshape would copy)."""
    try:
        return view.view(-1)
    except RuntimeError:
        return view
