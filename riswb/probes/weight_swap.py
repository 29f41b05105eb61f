"""Parameters that changed outside optimizer.step (event `weights_swapped`).

docs/failures.md #19: EMA weights swapped in for validation and never swapped back;
#20: an SWA swap-in that changed nothing. The probe keeps a fingerprint of the trainable tensors —
the bits of a strided sample of at most `max_elems` elements per tensor (live views, copied
by ONE fused `_foreach_copy_` into a buffer kept for it when the parameters share a dtype and
device and are contiguous, which is the usual case; otherwise each view is flattened and
widened to int64 and concatenated),
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
  (checked at swap_out, else before the next optimizer step, else at run end), up to
  rounding and the loop's routine edits (below);
* `noop`           — a declared swap_in that changed nothing (restored is then true);
* extras: `detected` (eval | swap_in | swap_out | optimizer_step | flush) and `resolved`
  (swap_in | swap_out | optimizer_step | run_end | flush); `steps_changed` for changes
  found between optimizer steps (one event per run of consecutive flush intervals).

A swap for evaluation that is restored before training resumes gives one event with
restored=true (not a finding); an unrestored one gives restored=false.

Not every change outside optimizer.step is a swap. Loops edit weights on purpose: WGAN
weight clipping, max-norm / row-normalization projections, SAM's `p.add_(e)` … `p.sub_(e)`.
A swap replaces the weights wholesale by very different ones, so an UNDECLARED change
(between steps or at an eval) counts only when all of these hold:

* it is beyond rounding: ‖Δ‖ > 4·eps(dtype)·‖θ‖ for some tensor (SAM's restore leaves
  ~1e-8 relative residue; this tolerance also decides `restored` for every swap);
* it is big against the tensor's latest optimizer update u and latest routine edit e:
  ‖Δ‖ > 2·√(‖u‖² + ‖e‖²) over the changed tensors. A nearest-point projection applied after
  a step (clamp, renorm) moves θ no farther than the step did, since the previous iterate
  already satisfied the constraint; an EMA or snapshot loaded in lags many updates behind;
* between steps only: the loop does not edit the weights on ≥ half of the optimizer steps
  (then the edits are a constraint the loop applies, however big; decided once 8 steps
  were compared, or at run end).

Before the first optimizer step nothing trained can be lost: a checkpoint loaded after the
Workbench was built just becomes the reference. Declared swaps (`weights_swap_in`) count
whenever they change anything beyond rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.bits import as_bits

_REFERENCE, _CURRENT = 0, 1  # the two fingerprint buffers


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
        self._single = False  # one dtype, device and flat layout: one fused copy
        self._on_cpu = True
        # on CPU with `_single`: numpy views of `_views` and of the two buffers, and the
        # buffers' memoryviews (which compare their current contents)
        self._host: tuple[list[np.ndarray], list[np.ndarray], list[memoryview]] | None = None
        self._host_ptrs: list[int] = []
        self._owner: torch.Tensor | None = None  # (E,) which tensor each sampled element is
        self._ref: torch.Tensor | None = None
        self._pending: dict[str, Any] | None = None
        self._masks: list[tuple[int, torch.Tensor]] = []  # (step, [changed, swap-like])
        self._reduced: list[tuple[list[int], torch.Tensor]] = []  # (steps, (n, 2) counts)
        self._held: list[tuple[int, int, bool]] = []  # (step, changed, swap-like) undecided
        self._episode = False
        self._compared = self._edited = 0  # optimizer steps compared / with a real edit
        self._steps_done = 0  # optimizer steps seen: after the first, training can be lost
        self._ref_vals_cache: torch.Tensor | None = None
        self._ended = False
        self._upd_sq = self._edit_sq = torch.zeros(0, dtype=torch.float64)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "max_elems": self.max_elems}

    # -- fingerprints -----------------------------------------------------------------------

    def _build(self, params: list[torch.Tensor]) -> None:
        self._reduce_masks()  # pending masks belong to the old sample layout
        # live integer views of each sample, flat where the layout allows, so that a
        # fingerprint is usually one fused copy into a buffer kept for it
        self._views = [_flat_if_possible(as_bits(_sample_view(p.detach(), self.max_elems)))
                       for p in params]
        self._ptrs = [p.data_ptr() for p in params]
        kinds = {(v.dtype, v.device) for v in self._views}
        self._single = len(kinds) == 1 and all(v.dim() == 1 for v in self._views)
        device = self._views[0].device if self._views else torch.device("cpu")
        self._on_cpu = device.type == "cpu"
        self._host = None
        if self._single:  # [the reference's buffer, the current one], and their slices
            sizes = [v.numel() for v in self._views]
            self._buffers = [self._views[0].new_empty(sum(sizes)) for _ in range(2)]
            self._slices = [list(buffer.split(sizes)) for buffer in self._buffers]
            if device.type == "cpu":  # numpy views of the same memory (see `_fingerprint`)
                self._host = self._numpy_views()
        owner = [i for i, v in enumerate(self._views) for _ in range(v.numel())]
        self._owner = torch.tensor(owner, dtype=torch.long, device=device)
        # float views of the same samples (complex as real pairs), for sizes of changes
        self._fviews = [_real(_sample_view(p.detach(), self.max_elems)) for p in params]
        # fp16 and bf16 share int16 bits: values come from the bits only for one float dtype
        self._one_dtype = self._single and len({v.dtype for v in self._fviews}) == 1
        self._tol = torch.tensor([_ROUNDING * torch.finfo(_real(p).dtype).eps for p in params],
                                 dtype=torch.float64, device=device)
        if (self._upd_sq.shape, self._upd_sq.device) != ((len(params),), device):
            zeros = torch.zeros(len(params), dtype=torch.float64, device=device)
            self._upd_sq, self._edit_sq = zeros, zeros.clone()  # latest update / routine edit
        self._pre_vals: torch.Tensor | None = None

    def _numpy_views(self) -> tuple[list[np.ndarray], list[np.ndarray], list[memoryview]] | None:
        """Numpy views of `_views` and of the two buffers, the buffers' memoryviews, or None
        for a layout numpy cannot view (torch's copy then). A numpy view keeps the address
        it was made at: `_host_ptrs` tells when the memory moved under the same tensors."""
        try:
            buffers = [buffer.numpy() for buffer in self._buffers]
            host = ([v.numpy() for v in self._views], buffers, [memoryview(b) for b in buffers])
        except (RuntimeError, TypeError):
            return None
        self._host_ptrs = [v.data_ptr() for v in self._views]
        return host

    def _values(self, bits: torch.Tensor) -> torch.Tensor:
        """(E,) float64 values of the sampled elements whose fingerprint is `bits`: two ops
        when the fingerprint is one dtype, else one per tensor (from the float views)."""
        if self._one_dtype:
            return bits.view(self._fviews[0].dtype).to(torch.float64)
        device = self._owner.device
        return torch.cat([v.reshape(-1).to(device=device, dtype=torch.float64)
                          for v in self._fviews])

    def _per_tensor(self, values: torch.Tensor) -> torch.Tensor:
        """(E,) -> (T,) sums over each tensor's sampled elements."""
        out = values.new_zeros(len(self._views))
        return out.index_add_(0, self._owner, values)

    def _rebase(self) -> None:
        """The current weights become the reference (its values are read when needed)."""
        self._ref = self._fingerprint(_REFERENCE)
        self._ref_vals_cache = None

    def _restart(self, params: list[torch.Tensor]) -> None:
        """Before any training step: the weights now (storage included) are the start."""
        self._storage_moved(params)
        self._rebase()

    @property
    def _ref_vals(self) -> torch.Tensor:
        if self._ref_vals_cache is None:
            self._ref_vals_cache = self._values(self._ref)
        return self._ref_vals_cache

    def _measures_update(self) -> bool:
        """Whether this optimizer step's update size is taken (the yardstick of changes
        outside the step): the first steps, then one in `_UPDATE_EVERY` — update sizes drift
        slowly, and measuring one takes some ten small ops, which on every fourth step still
        cost a host-bound loop ~1% of its step."""
        return self._steps_done < _UPDATE_FIRST or self._steps_done % _UPDATE_EVERY == 0

    def _compare(self, now: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Against the reference: (T,) tensors changed beyond rounding, their (T,) ‖Δ‖²,
        whether the change is swap-like (big against each tensor's update and routine edit)
        and the (E,) values now. On the device, no sync."""
        vals = self._values(now)
        diff = torch.where(now == self._ref, torch.zeros_like(vals), vals - self._ref_vals)
        d_sq = self._per_tensor(diff.square())  # a new NaN/Inf stays NaN/Inf: changed
        ref = torch.where(self._ref_vals.isfinite(), self._ref_vals, 0.0)  # NaN weights stay
        changed = ~(d_sq <= self._tol.square() * self._per_tensor(ref.square()))
        zero = d_sq.new_zeros(())
        base = torch.where(changed, self._upd_sq + self._edit_sq, zero).sum()
        big = ~(torch.where(changed, d_sq, zero).sum() <= _BIG**2 * base)
        return changed, d_sq, changed.any() & big, vals

    def _fingerprint(self, slot: int = _CURRENT) -> torch.Tensor:
        """(E,) integers: the bits of every sampled element, tensor after tensor. One
        dtype and device: written into the buffer `slot` (the reference's is rewritten only
        by `_rebase`; a current one lives until the next call), one fused copy instead of a
        `cat`'s allocation and gather, the costliest op in this probe's per-step pair. On
        the CPU the copy is numpy's, between views of the same memory: a torch op per
        tensor (what `_foreach_copy_` runs there) costs a host-bound loop far more."""
        if self._host is not None:
            views, buffers, _ = self._host
            np.concatenate(views, out=buffers[slot])
            return self._buffers[slot]
        if self._single:
            torch._foreach_copy_(self._slices[slot], self._views)
            return self._buffers[slot]
        device = self._views[0].device
        return torch.cat([v.reshape(-1).to(device=device, dtype=torch.int64)
                          for v in self._views])

    def _reduce_masks(self) -> None:
        """Pending per-step (changed tensors, swap-like) pairs -> one (n, 2) device tensor."""
        if self._masks:
            masks, self._masks = self._masks, []
            self._reduced.append(([step for step, _ in masks],
                                  torch.stack([m for _, m in masks])))

    def _storage_moved(self, params: list[torch.Tensor]) -> int:
        ptrs = [p.data_ptr() for p in params]
        moved = abs(len(ptrs) - len(self._ptrs))
        moved += sum(a != b for a, b in zip(ptrs, self._ptrs, strict=False))
        if moved:
            self._build(params)
        return moved

    def _count_changed(self, params: list[torch.Tensor], *, swaps_only: bool = False) -> int:
        """Tensors that differ beyond rounding from the post-step reference; with
        `swaps_only`, 0 unless the change is swap-like (host sync: rare events only)."""
        moved = self._storage_moved(params)
        if self._ref is None or not self._views:
            return 0
        now = self._fingerprint()
        if now.shape != self._ref.shape:
            return len(self._views)
        changed, _, swap, _ = self._compare(now)
        if swaps_only and not moved and not bool(swap):
            return 0
        return int(changed.sum())

    # -- events -----------------------------------------------------------------------------

    def on_run_start(self, ctx: StepContext) -> None:
        if ctx.wb.params:
            self._build(ctx.wb.params)
            self._rebase()

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        if self._ref is None:
            return
        if self._pending is not None:
            self._resolve(ctx, "optimizer_step")
            self._pre_vals = self._values(self._fingerprint())
            return
        if self._host is not None and [v.data_ptr() for v in self._views] != self._host_ptrs:
            # memory moved under the same tensors (`share_memory()`, a storage resize): the
            # torch views follow, numpy's would read freed memory (the flush reports it)
            self._host = self._numpy_views()
        now = self._fingerprint()
        if not self._steps_done:  # nothing trained yet: a loaded checkpoint is the start
            self._restart(ctx.wb.params)
            self._pre_vals = self._ref_vals if self._measures_update() else None
            return
        self._compared += 1
        host = self._host
        if host is not None and self._ref is not self._buffers[_REFERENCE]:
            host = None  # rebuilt since the reference was taken: compare with torch
        # on CPU a host read costs nothing; two memoryviews compare in C, no torch op
        if (host[2][_CURRENT] == host[2][_REFERENCE] if host is not None
                else self._on_cpu and torch.equal(now, self._ref)):
            self._pre_vals = self._ref_vals if self._measures_update() else None
            return
        changed, d_sq, swap, pre_vals = self._compare(now)
        self._pre_vals = pre_vals if self._measures_update() else None
        # routine edits (not swap-like) are the yardstick for the next ones
        self._edit_sq = torch.where(changed & ~swap, d_sq, self._edit_sq)
        self._masks.append((ctx.step, torch.stack([changed.sum(), swap.long()])))
        if len(self._masks) >= _MASK_BATCH:
            self._reduce_masks()

    def on_after_optimizer_step(self, ctx: StepContext) -> None:
        if not self._views:
            return
        self._rebase()
        self._steps_done += 1
        if self._pre_vals is not None and self._pre_vals.shape == self._ref_vals.shape:
            u_sq = self._per_tensor((self._ref_vals - self._pre_vals).square())
            self._upd_sq = torch.where(u_sq > 0, u_sq, self._upd_sq)
        self._pre_vals = None

    def on_eval(self, ctx: StepContext) -> None:
        if self._pending is None:
            self._detect(ctx, "unknown", "eval", swaps_only=True)

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
        if self._count_changed(ctx.wb.params, swaps_only=True) == 0:
            self._resolve(ctx, "swap_out", changed=0)

    def on_run_end(self, ctx: StepContext) -> None:
        self._ended = True
        if self._pending is not None:
            self._resolve(ctx, "run_end")

    def flush(self, ctx: StepContext) -> None:
        wb = ctx.wb
        self._reduce_masks()  # before any rebuild below changes which tensor owns an element
        if self._ref is not None and self._pending is None:
            moved = self._storage_moved(wb.params)
            if moved and not self._steps_done:
                self._rebase()  # replaced before any training: the start, not a swap
            elif moved:
                self._write(ctx.step, "storage", moved, restored=False, noop=False,
                            detected="flush", resolved="flush", wb=wb)
                self._rebase()
        if self._reduced:
            reduced, self._reduced = self._reduced, []
            steps = [step for chunk, _ in reduced for step in chunk]
            rows = torch.cat([c for _, c in reduced]).tolist()
            held = [(step, int(n), bool(s)) for step, (n, s) in zip(steps, rows, strict=True)
                    if n > 0]
            self._edited += len(held)
            self._held.extend(held)
        if self._compared < _MIN_COMPARED and not self._ended:
            return  # too few steps yet to tell a constraint applied every step from a swap
        held, self._held = self._held, []
        if self._edited >= _RECURRING * self._compared:
            self._episode = False  # the loop edits on most steps: a constraint, not a swap
            return
        swaps = [(step, n) for step, n, swap in held if swap]
        if swaps and not self._episode:
            self._write(swaps[0][0], "unknown", max(n for _, n in swaps), restored=False,
                        noop=False, detected="optimizer_step", resolved="optimizer_step",
                        wb=wb, steps_changed=len(held))
        self._episode = bool(swaps)

    # -- helpers ----------------------------------------------------------------------------

    def _detect(self, ctx: StepContext, kind: str, where: str, *,
                swaps_only: bool = False) -> bool:
        if self._ref is None:
            return False
        if swaps_only and not self._steps_done:  # before any training: nothing to lose yet
            self._restart(ctx.wb.params)
            return False
        changed = self._count_changed(ctx.wb.params, swaps_only=swaps_only)
        if changed:
            self._pending = {"step": ctx.step, "kind": kind, "params_changed": changed,
                             "detected": where}
        return bool(changed)

    def _resolve(self, ctx: StepContext, where: str, changed: int | None = None) -> None:
        pending, self._pending = self._pending, None
        if changed is None:  # what is left beyond rounding and the loop's routine edits
            changed = self._count_changed(ctx.wb.params, swaps_only=True)
        self._write(pending["step"], pending["kind"], pending["params_changed"],
                    restored=changed == 0, noop=False, detected=pending["detected"],
                    resolved=where, wb=ctx.wb)
        if changed and where != "run_end":
            self._rebase()  # reported once; training goes on from here

    @staticmethod
    def _write(step: int, kind: str, params_changed: int, *, restored: bool, noop: bool,
               detected: str, resolved: str, wb: Any, **extra: Any) -> None:
        wb.writer.event(step, "weights_swapped", kind=kind, params_changed=int(params_changed),
                        restored=bool(restored), noop=bool(noop), detected=detected,
                        resolved=resolved, **extra)


_MASK_BATCH = 64  # steps of masks held before they are reduced (bounds the memory)
_UPDATE_FIRST, _UPDATE_EVERY = 16, 16  # update sizes measured: the first steps, then 1 in 16
_ROUNDING = 4.0  # ‖Δ‖/‖θ‖ up to this many eps of the dtype is rounding, not a change
_BIG = 2.0  # a swap moves θ more than this many times its latest update and routine edit
_RECURRING = 0.5  # edits on at least this share of the compared steps are a constraint
_MIN_COMPARED = 8  # compared steps before between-step changes are judged


def _real(data: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(data) if data.is_complex() else data


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
