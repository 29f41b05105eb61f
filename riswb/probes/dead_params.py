"""Trainable tensors that never receive a gradient (kind `dead`, event `dead_params`).

docs/failures.md #7: heads holding half the model's parameters never received a loss;
#18: a clamp zeroed 28% of a head's gradient elements. Two granularities:

* tensor level, every backward (cheap: the per-tensor norms shared with GradNormsProbe):
  a trainable tensor is *dead* over a window when its grad was None or exactly zero
  (‖g‖ = 0) at every AFTER_BACKWARD of the window;
* element level, on sampled backward passes (`elem_every`, default 23, the window's first
  backward included): which gradient elements were exactly zero, per top-level module. The
  interval is prime so that a loop with a period of backward passes per step (one backward
  per head, a GAN's alternating D and G, accumulation) is sampled at every phase of it: an
  even interval read only the first of two backwards and took a head that gets its gradient
  in the second for dead. Lookup tables (nn.Embedding, nn.EmbeddingBag) are left out of the
  element level: only the rows a batch looks up get a gradient, so rows of tokens no sampled
  batch held are not dead (a table never looked up is still a dead tensor). Likewise an
  nn.Linear weight's elements are dead only by whole rows (a unit that got no gradient):
  element (j, i) is zero whenever unit j and input i are never non-zero together, which
  one-hot inputs and ReLU units do all the time, and a column zero throughout is an input
  that was zero in every sampled batch (a one-hot input never set, or a dead unit upstream
  — which its own layer shows as a dead row); nor are elements a
  torch.nn.utils.prune mask (`<name>_mask` beside `<name>_orig`) zeroes on purpose.
  "Ever non-zero in this window" is the OR of the gradients' bits (sign bit ignored at the
  end), accumulated in place (see riswb.probes.bits). Memory: one integer of the gradient's width
  per trainable element (two for complex), kept (and zeroed) from window to window.

The window is tumbling: `window` backward passes (default 50), evaluated at the first flush
after it fills (elements only once `_MIN_INFORMATIVE` sampled backwards carried a non-zero
gradient somewhere — a satisfied margin loss gives backwards with none, which prove nothing
about any element —, the windows adding up until then, their element fields NaN); a run
that ends before its first window is full is evaluated on what it has, at RUN_END (a short
final window of a longer run is dropped, so that a tensor that gets a gradient only now and
then does not flicker in and out of the dead set).

Record (one per evaluated window, `step` = the flush step):

* `n_dead`          — dead trainable tensors (internals §3);
* `frac_dead_elems` — fraction of all trainable elements whose gradient was zero (or None)
  on every sampled backward of the window (internals §3; covers dead tensors too);
* `n_params`        — trainable tensors watched; `steps` — backward passes in the window;
* `dead_frac/<m>`   — the same element fraction per top-level module `m`;
* `zero_frac/<m>`   — mean fraction of exactly-zero gradient elements per sampled backward
  in module `m` (a clamped head shows ~0.28 here while its tensor is far from dead).

Event `dead_params` {names, steps, gated} whenever the dead set differs from the previous
window's (the first window counts as a change only if something is dead); `gated`: the dead
tensors beside a live tensor of their own module (a weight dead, its bias alive).
"""

from __future__ import annotations

from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.bits import as_bits, magnitude_bits
from riswb.probes.gradients import ModuleIndex, device_index, raw_grad_stats


class DeadParamsProbe(Probe):
    """Tensors whose gradient stays None/zero over a window, and zero-gradient fractions."""

    name = "dead_params"
    sampled = True  # statistics over observed steps (riswb.instrument.observation)

    def __init__(self, every: int | None = None, *, window: int = 50, elem_every: int = 23):
        super().__init__(every)
        if window < 1 or elem_every < 1:
            raise ValueError("window and elem_every must be >= 1")
        self.window = window
        self.elem_every = elem_every
        self._index: ModuleIndex | None = None
        self._dead_names: set[str] = set()
        self._evaluated = False
        self._seen_bits: list[torch.Tensor | None] = []  # per tensor: OR of its grads' bits
        self._lookup: list[bool] = []  # per tensor: an embedding table's weight
        self._linear: list[bool] = []  # per tensor: an nn.Linear's weight (out, in)
        self._lookup_masks: dict[torch.device, torch.Tensor] = {}
        self._reset()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "window": self.window, "elem_every": self.elem_every}

    def _reset(self) -> None:
        self._steps = 0
        self._alive: torch.Tensor | None = None  # (P,) Σ ‖g_p‖ over the window: 0 = dead
        self._reset_elements()

    def _reset_elements(self) -> None:
        for bits in self._seen_bits:
            if bits is not None:
                bits.zero_()  # reused: a fresh gradient-sized buffer costs page faults
        self._zero_counts: torch.Tensor | None = None  # (P,) float64: zero elements, summed
        self._samples = 0
        self._informative: torch.Tensor | None = None  # samples with any non-zero gradient

    def on_after_backward(self, ctx: StepContext) -> None:
        wb = ctx.wb
        if not wb.named_params:
            return
        index = ModuleIndex.of(wb, self._index)
        if index is not self._index:
            self._index = index
            tables = {id(m.weight) for m in wb.model.modules()
                      if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))}
            self._lookup = [id(p) in tables for _, p in wb.named_params]
            linear = {id(m.weight) for m in wb.model.modules() if isinstance(m, torch.nn.Linear)}
            self._linear = [id(p) in linear for _, p in wb.named_params]
            self._lookup_masks = {}
            self._reset()
        stats = raw_grad_stats(wb)
        # one op per step: norms are ≥ 0, so the sum stays 0 exactly while every grad is
        # None/zero (and a NaN gradient is alive, just not well)
        if self._alive is None:
            self._alive = stats.norms.clone()
        else:
            self._alive.add_(stats.norms)
        if self._steps % self.elem_every == 0:
            self._sample_elements(stats.grads, index)
            # a backward whose gradient is 0 everywhere (a satisfied margin loss) says
            # nothing about which elements can get one (counted on the device: no sync)
            informative = (stats.norms.sum() > 0).to(torch.int64)
            self._informative = informative if self._informative is None else (
                self._informative + informative)
        self._steps += 1

    def _sample_elements(self, grads: list[torch.Tensor | None], index: ModuleIndex) -> None:
        if len(self._seen_bits) != len(grads):
            self._seen_bits = [None] * len(grads)
        present = [i for i, g in enumerate(grads) if g is not None and not self._lookup[i]]
        dense = [grads[i].to_dense() if grads[i].is_sparse else grads[i] for i in present]
        for i, grad in zip(present, dense, strict=True):
            bits, seen = as_bits(grad.detach()), self._seen_bits[i]
            if seen is None or seen.shape != bits.shape or seen.dtype != bits.dtype:
                self._seen_bits[i] = bits.clone()
            else:
                seen.bitwise_or_(bits)
        # a None grad: all of its elements are zero; a lookup table: none counted
        zeros = torch.where(self._lookup_mask(index), 0.0, index.numel)
        if dense:
            nonzero = torch.stack([torch.count_nonzero(g) for g in dense]).to(zeros)
            target = device_index(tuple(present), zeros.device)
            zeros.index_add_(0, target, -nonzero)
        self._zero_counts = zeros if self._zero_counts is None else self._zero_counts + zeros
        self._samples += 1

    def _lookup_mask(self, index: ModuleIndex) -> torch.Tensor:
        mask = self._lookup_masks.get(index.numel.device)
        if mask is None:
            mask = self._lookup_masks[index.numel.device] = torch.tensor(
                self._lookup, dtype=torch.bool, device=index.numel.device)
        return mask

    def flush(self, ctx: StepContext) -> None:
        if self._steps >= self.window:
            self._evaluate(ctx)

    def on_run_end(self, ctx: StepContext) -> None:
        if self._steps and not self._evaluated:  # a run shorter than one window
            self._evaluate(ctx, final=True)

    def _evaluate(self, ctx: StepContext, final: bool = False) -> None:
        index, wb = self._index, ctx.wb
        if index is None or self._alive is None:
            self._reset()
            return
        names = [name for name, _ in wb.named_params]
        alive = (self._alive != 0).tolist()
        dead = [name for name, ok in zip(names, alive, strict=True) if not ok]
        numel = index.numel
        n_modules = len(index.names)
        record: dict[str, Any] = {
            "n_dead": len(dead),
            "frac_dead_elems": float("nan"),
            "n_params": len(names),
            "steps": self._steps,
        }
        informative = 0 if self._informative is None else int(self._informative.item())
        # elements are judged on at least `_MIN_INFORMATIVE` sampled backwards that carried a
        # gradient: fewer (most batches gave a zero loss) and they add up into the next window
        judged = informative >= _MIN_INFORMATIVE or (final and informative > 0)
        if judged and self._zero_counts is not None:
            # elements zero on every sampled step, per tensor (a None-only tensor: all of it;
            # a buffer still zero from an earlier window reads the same way)
            seen_bits = self._seen_bits + [None] * (len(numel) - len(self._seen_bits))
            masks = _pruning_masks(wb.model)
            never = [
                numel[i].new_zeros(()) if self._lookup[i]
                else numel[i].to(torch.float64) if seen is None
                else numel[i] - _ever_nonzero(seen, wb.named_params[i][1].numel(),
                                              input_columns=self._linear[i],
                                              pruned=masks.get(id(wb.named_params[i][1]))
                                              ).to(numel)
                for i, seen in enumerate(seen_bits)
            ]
            never_t = torch.stack(never)
            mod_numel = torch.zeros(n_modules, dtype=torch.float64, device=numel.device)
            mod_numel.index_add_(0, index.owner, numel)
            mod_dead = torch.zeros_like(mod_numel).index_add_(0, index.owner, never_t)
            mod_zero = torch.zeros_like(mod_numel).index_add_(0, index.owner, self._zero_counts)
            total = float(numel.sum().item())
            record["frac_dead_elems"] = float(never_t.sum().item()) / total if total else 0.0
            dead_frac = (mod_dead / mod_numel.clamp_min(1)).tolist()
            zero_frac = (mod_zero / (mod_numel.clamp_min(1) * self._samples)).tolist()
            for m, name in enumerate(index.names):
                record[f"dead_frac/{name}"] = dead_frac[m]
            for m, name in enumerate(index.names):
                record[f"zero_frac/{name}"] = zero_frac[m]
            self._reset_elements()
        wb.writer.scalars(ctx.step, "dead", record)
        dead_set = set(dead)
        if dead_set != self._dead_names:
            wb.writer.event(ctx.step, "dead_params", names=dead, steps=self._steps,
                            gated=_gated(dead, names, alive))
            self._dead_names = dead_set
        self._evaluated = True
        self._steps = 0
        self._alive = None


_MIN_INFORMATIVE = 3  # sampled backwards with a gradient before elements are judged


def _gated(dead: list[str], names: list[str], alive: list[bool]) -> list[str]:
    """The dead tensors whose own module has a tensor that got a gradient (a weight dead
    beside a live bias): the module's output does reach the loss, so the gradient is
    stopped at this very tensor (a hook or mask zeroing it) or its inputs are all zero."""
    live_modules = {name.rpartition(".")[0] for name, ok in zip(names, alive, strict=True)
                    if ok}
    return [name for name in dead if "." in name and name.rpartition(".")[0] in live_modules]


def _pruning_masks(model: torch.nn.Module) -> dict[int, torch.Tensor]:
    """id(parameter) -> where it is pruned (True), for torch.nn.utils.prune's convention: a
    parameter `<name>_orig` beside a buffer `<name>_mask`. Pruned elements get a zero
    gradient by design: they are not dead."""
    out = {}
    for module in model.modules():
        for name, buffer in module.named_buffers(recurse=False):
            if name.endswith("_mask"):
                param = module._parameters.get(f"{name[:-len('_mask')]}_orig")
                if param is not None and buffer.shape == param.shape:
                    out[id(param)] = buffer == 0
    return out


def _ever_nonzero(seen_bits: torch.Tensor, elements: int, *, input_columns: bool = False,
                  pruned: torch.Tensor | None = None) -> torch.Tensor:
    """Elements counted alive: for most tensors those whose OR-ed bits say they were
    non-zero at least once. A complex tensor's bits hold its real and imaginary parts side
    by side (twice `elements` values, in a last dimension of 2): either part counts.

    With `input_columns` (an nn.Linear weight, (out, in)), element (j, i) gets Σ δ_j·x_i:
    zero throughout whenever unit j and input i were never non-zero on the same sample,
    which one-hot inputs and ReLU units do all the time. So only a dead ROW (unit j got no
    gradient from any sample) is dead, over the columns that saw a non-zero input: a column
    zero throughout is an input zero in every sampled batch — a one-hot state never
    visited, padding, or a dead unit upstream, which shows as its own layer's dead row."""
    nonzero = magnitude_bits(seen_bits) != 0
    if nonzero.numel() == 2 * elements and elements:
        nonzero = nonzero.any(-1)
    if pruned is not None and pruned.shape == nonzero.shape:
        nonzero = nonzero | pruned.to(nonzero.device)
    if input_columns and nonzero.dim() == 2:
        live_rows = nonzero.any(1)
        if nonzero.shape[0] == 1:  # one row: a silent column and a dead row look the same
            return live_rows.sum() * nonzero.shape[1]
        dead = (~live_rows).sum() * nonzero.any(0).sum()
        return nonzero.numel() - dead
    return nonzero.sum()
