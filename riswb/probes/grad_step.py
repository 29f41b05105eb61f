"""Gradients at optimizer.step against those at the end of backward (kind `grad_step`).

Whatever the loop's own code does between `loss.backward()` and `optimizer.step()` —
`torch.nn.utils.clip_grad_norm_`, `GradScaler.unscale_`, masking, `nan_to_num_`, zeroing,
`p.grad = None` — is measured here without any `wb.*` helper: AFTER_BACKWARD keeps the raw
gradient norms of the backward (with accumulation: of the LAST backward, whose `.grad` holds
the accumulated sum), and the optimizer's step pre-hook takes the norms of the gradients it
is about to apply (one `_foreach_norm` over that optimizer's tensors — skipped when the
same `.grad` tensors' version counters have not moved since the backward's end, its norms
then being the step's, or moved only by a whole-model `wb.clip_grad_norm_`, its norms × the
clip factor; an edit through `.data` bumps no counter and shows on sampled steps only;
with a closure — `optimizer.step(closure)`, as Lightning steps — the backward runs inside
the step, so the comparison moves to the post-hook, the optimizer leaving `.grad` as it
used it). Per tensor p, e_p = ‖g_p‖ at backward × (1/scale when a GradScaler's `unscale_`
ran for this optimizer in between, riswb.instrument.scaler) and s_p = ‖g_p‖ at step; over
tensors where both are finite and e_p > 0, the step's ratio r = √(Σ s_p² / Σ e_p²), and:

* rescaled — every r_p = s_p/e_p within `tol` of r, r ≠ 1 and r > 0: one factor for all
  tensors, i.e. clipping (an unscale alone gives r = 1: it is not an alteration);
* altered  — some r_p differ from r by more than `tol`: per-tensor edits (masking, partial
  zeroing, a clamp of some tensors); `altered_down` — altered with every r_p ≤ 1 + `tol`
  (nothing grew: `clip_grad_value_`, a per-tensor clip);
* zeroed   — Σ s_p² = 0 while Σ e_p² > 0 (zero_grad between backward and step);
* replaced — some `.grad` is a different tensor object or None at step (host check) and
  the step is altered or zeroed: a copy of the same values (`p.grad = p.grad.clone()`, a
  `nan_to_num` with nothing to replace) changes nothing the optimizer sees.

Feeds: a step with no `wb.clip_grad_norm_` call in its interval adds (pre-norm, post-norm
when rescaled down, else +inf) to `wb.observed_clip_log`, from which ClipProbe writes an
`observed` clip record at the flush (so ClipProbe must come after this probe, as in the
default order); elements non-finite at backward in tensors that are all finite at step are
added to `wb.observed_sanitized` at the step (NonFiniteProbe's `sanitized` takes the larger
of it and `wb.sanitize_`'s count).

Observed cycles only (`sampled`: on a host-bound loop the Workbench may observe one
optimizer-step cycle in several, riswb.instrument.observation); a step whose latest backward
fell in an unobserved cycle is not compared.

Elementwise (sampled: the first `elem_first` (3) optimizer steps, then the first observed
one at or after every `elem_every`-th (200): a sample costs ~6 passes over the gradients,
28 ms on the reference model's CPU step): the backward's gradients are copied at
AFTER_BACKWARD (one `_foreach_copy_` into kept buffers) and compared at step bit for bit
(after the same unscale): `frac_changed` (of all elements) and `frac_zeroed` (of the
elements non-zero at backward, zero or None at step).

Record (one per flush, over the interval's observed steps): `steps`, `norm_backward` and
`norm_step` (RMS of the unscaled total norms), `ratio` (mean r over steps with a defined
r), `rescaled`, `altered`, `altered_down`, `zeroed`, `replaced`, `unscaled` (fractions of
steps), `nonfinite_backward`, `sanitized` (elements), `elem_samples`, `frac_changed`,
`frac_zeroed` (NaN without samples). Event `grad_step_change` {`change`: "zeroed" |
"replaced", `steps`, `first_step`, `optimizer`} per kind and interval when it happened.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.instrument.workbench import grad_versions
from riswb.probes.bits import as_bits, magnitude_bits
from riswb.probes.gradients import GradStats, device_index, raw_grad_stats, tensor_norms
from riswb.probes.nonfinite import raw_nonfinite

_FIELDS = ("bw2", "step2", "ratio", "defined", "rescaled", "altered", "zeroed", "nonfinite",
           "sanitized", "altered_down")


class GradStepProbe(Probe):
    """What the loop did to the gradients between backward and optimizer.step."""

    name = "grad_step"
    sampled = True  # statistics over observed steps (riswb.instrument.observation)

    def __init__(self, every: int | None = None, *, tol: float = 1e-3, elem_first: int = 3,
                 elem_every: int = 200):
        super().__init__(every)
        if tol <= 0 or elem_first < 0 or elem_every < 1:
            raise ValueError("tol must be > 0, elem_first >= 0 and elem_every >= 1")
        self.tol, self.elem_first, self.elem_every = tol, elem_first, elem_every
        self._bw: GradStats | None = None
        self._bw_norms: torch.Tensor | None = None
        self._bw_bad: torch.Tensor | None = None
        self._bw_versions: list[int] = []
        self._bw_index = 0  # wb.n_backward of the backward `_bw` was taken at
        self._copies: list[torch.Tensor | None] = []
        self._copied = False
        self._pending: set[int] = set()  # optimizers not yet stepped since the backward
        self._layouts: dict[int, tuple[Any, tuple[int, ...]]] = {}
        # per observed step: (optimizer, step, expected norms, step norms, unscaled backward
        # norms, non-finite counts at backward or None, no wb.clip_grad_norm_ call yet,
        # some `.grad` another tensor object or None at step)
        self._rows: list[tuple] = []
        self._elems: list[torch.Tensor] = []  # (changed, total, zeroed, nonzero before)
        self._unscaled = 0
        # the next elementwise sample: the first OBSERVED step at or after this one (on a
        # host-bound loop the Workbench observes one cycle in several)
        self._elem_next = elem_every

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tol": self.tol, "elem_first": self.elem_first,
                "elem_every": self.elem_every}

    def _elem_due(self, opt_step: int) -> bool:
        return opt_step <= self.elem_first or opt_step >= self._elem_next

    def on_after_backward(self, ctx: StepContext) -> None:
        wb = ctx.wb
        if not wb.named_params:
            return
        self._bw = raw_grad_stats(wb)
        # taken now (the stats compute on first use): kept until the step, past any clip
        self._bw_norms = self._bw.norms
        self._bw_index = wb.n_backward
        self._bw_bad = raw_nonfinite(wb)
        self._bw_versions = grad_versions(wb.params)
        self._pending = set(range(len(wb.optimizers)))
        self._copied = self._elem_due(wb.opt_step + 1)
        if self._copied:
            self._copy(self._bw.grads)

    def _copy(self, grads: list[torch.Tensor | None]) -> None:
        if len(self._copies) != len(grads):
            self._copies = [None] * len(grads)
        pairs = []
        for i, grad in enumerate(grads):
            if grad is None or grad.is_sparse:
                self._copies[i] = None
                continue
            kept = self._copies[i]
            if kept is None or kept.shape != grad.shape or kept.dtype != grad.dtype:
                kept = self._copies[i] = torch.empty_like(grad)
            pairs.append((kept, grad.detach()))
        if pairs:
            torch._foreach_copy_([k for k, _ in pairs], [g for _, g in pairs])

    def _indices(self, wb: Any, index: int) -> tuple[int, ...]:
        groups = wb.optimizers[index].param_groups
        key = tuple(id(p) for g in groups for p in g["params"])
        cached = self._layouts.get(index)
        if cached is None or cached[0] != key:
            own = set(key)
            chosen = tuple(i for i, (_, p) in enumerate(wb.named_params) if id(p) in own)
            cached = self._layouts[index] = (key, chosen)
        return cached[1]

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        if not ctx.payload.get("closure"):
            self._observe(ctx)

    def on_after_optimizer_step(self, ctx: StepContext) -> None:
        if ctx.payload.get("closure"):  # the closure's backward ran inside step()
            self._observe(ctx)

    def _observe(self, ctx: StepContext) -> None:
        wb, bw = ctx.wb, self._bw
        index = ctx.payload.get("optimizer", 0)
        chosen = self._indices(wb, index)
        if (bw is None or not chosen or index not in self._pending
                or self._bw_index != wb.n_backward):
            # no backward since this optimizer's last step, or the latest was not observed
            # (a cycle this probe did not see): nothing to compare
            return
        self._pending.discard(index)
        device = self._bw_norms.device
        # one optimizer over every trainable tensor (the usual loop) needs no index_select
        at = None if len(chosen) == len(wb.named_params) else device_index(chosen, device)
        grads = [wb.named_params[i][1].grad for i in chosen]
        before = [bw.grads[i] for i in chosen]
        same = all(g is b for g, b in zip(grads, before, strict=True))
        replaced = not same and any(b is not None and g is not b
                                    for g, b in zip(grads, before, strict=True))
        inverse = wb.scaler.unscaled.get(index)
        self._unscaled += inverse is not None
        with torch.no_grad():
            step = None if self._copied or not same else self._unchanged(wb, chosen, at)
            if step is None:
                step = tensor_norms(grads, device)
            expected = _select(self._bw_norms, at)
            if inverse is not None:
                expected = expected * inverse.to(device)
            bad = None if self._bw_bad is None else _select(self._bw_bad, at)
            if bad is not None:  # non-finite at backward, all finite at step: sanitized
                sanitized = torch.where(torch.isfinite(step), bad, bad.new_zeros(())).sum()
                wb.observed_sanitized += sanitized.to(wb.observed_sanitized)
            if self._copied:
                self._compare(chosen, grads, inverse)
                opt_step = ctx.payload.get("opt_step", wb.opt_step)
                self._elem_next = (opt_step // self.elem_every + 1) * self.elem_every
        # the arithmetic waits for the flush, batched over the interval's steps
        self._rows.append((index, ctx.step, expected, step, _select(bw.unscaled, at), bad,
                           not wb.clip_log, replaced))

    def _unchanged(self, wb: Any, chosen: tuple[int, ...],
                   at: torch.Tensor | None) -> torch.Tensor | None:
        """The step's norms without a pass over the gradients when no version counter moved
        since the backward's end (its norms), or only a whole-model `wb.clip_grad_norm_` did
        (its norms × torch's clip factor); None when anything else touched them."""
        versions = grad_versions(wb.params)
        now = [versions[i] for i in chosen]
        if now == [self._bw_versions[i] for i in chosen]:
            return _select(self._bw_norms, at)
        clip = wb.last_clip
        if (clip is not None and clip[0] == self._bw_versions
                and now == [clip[1][i] for i in chosen]):
            _, _, norm, limit = clip
            factor = (limit / (norm + 1e-6)).clamp(max=1.0)  # torch's own clip factor
            return _select(self._bw_norms, at) * factor.to(self._bw_norms)
        return None

    def _table(self, rows: list[tuple]) -> np.ndarray:
        """(S, 9) float64 per observed step, in `_FIELDS` order, for steps of one optimizer.

        The flush reads the norms to the host anyway: one stack and one copy, then numpy,
        whose small-array ops cost a fraction of torch's per-op dispatch."""
        norms = torch.stack([t for r in rows for t in (r[2], r[3], r[4])]).to(torch.float64)
        norms = norms.cpu().numpy().reshape(len(rows), 3, -1)
        expected, step, unscaled = norms[:, 0], norms[:, 1], norms[:, 2]
        bad = np.zeros_like(step)
        flagged = [i for i, r in enumerate(rows) if r[5] is not None]
        if flagged:
            bad[flagged] = torch.stack([rows[i][5] for i in flagged]).to(torch.float64).cpu()
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            usable = np.isfinite(expected) & np.isfinite(step) & (expected > 0)
            e2 = np.where(usable, np.square(expected), 0.0).sum(1)
            s2 = np.where(usable, np.square(step), 0.0).sum(1)
            ratio = np.sqrt(s2 / e2)
            per = np.where(usable, step / np.maximum(expected, 1e-300), ratio[:, None])
            uniform = (np.abs(per - ratio[:, None]) <= self.tol * ratio[:, None]).all(1)
            defined = usable.any(1)
            moved = np.abs(ratio - 1) > self.tol
            zeroed = (np.nan_to_num(np.square(step), nan=1.0).sum(1) == 0) & (e2 > 0)
            return np.stack([
                np.square(unscaled).sum(1), np.where(np.isfinite(ratio), s2, 0.0),
                np.where(defined, ratio, math.nan), defined,
                defined & uniform & moved & (ratio > 0), defined & ~uniform, zeroed,
                bad.sum(1), np.where(np.isfinite(step), bad, 0.0).sum(1),
                # altered, and no tensor's norm grew: clipping per element or per tensor
                defined & ~uniform & (np.where(usable, per, 1.0) <= 1 + self.tol).all(1),
            ], 1).astype(np.float64)

    def _compare(self, chosen: tuple[int, ...], grads: list[torch.Tensor | None],
                 inverse: torch.Tensor | None) -> None:
        changed = total = zeroed = nonzero = 0
        for i, grad in zip(chosen, grads, strict=True):
            kept = self._copies[i] if i < len(self._copies) else None
            if kept is None:
                continue
            if inverse is not None:
                kept = kept * inverse.to(device=kept.device, dtype=kept.dtype)
            was = magnitude_bits(as_bits(kept)) != 0
            nonzero = nonzero + was.sum()
            total += kept.numel()
            if grad is None or grad.shape != kept.shape:
                changed, zeroed = changed + kept.numel(), zeroed + was.sum()
                continue
            now = as_bits(grad.detach())
            changed = changed + (as_bits(kept) != now).sum()
            zeroed = zeroed + (was & (magnitude_bits(now) == 0)).sum()
        if total:
            self._elems.append(torch.stack([torch.as_tensor(v, dtype=torch.float64).to(
                self._bw_norms.device) for v in (changed, total, zeroed, nonzero)]))

    def flush(self, ctx: StepContext) -> None:
        wb = ctx.wb
        rows, self._rows = self._rows, []
        if rows:
            tables = {}
            for index in dict.fromkeys(r[0] for r in rows):
                tables[index] = self._table([r for r in rows if r[0] == index])
            order = {index: iter(range(len(t))) for index, t in tables.items()}
            table = np.stack([tables[r[0]][next(order[r[0]])] for r in rows])
            self._feed(wb, rows, table)
            sums = dict(zip(_FIELDS, np.nan_to_num(table, nan=0.0).sum(0).tolist(), strict=True))
            n = len(rows)
            defined = sums["defined"]
            # a `.grad` replaced by another tensor counts when the gradients changed with it:
            # `p.grad = torch.nan_to_num(p.grad)` with nothing to replace copies the values
            changed = (table[:, 5] > 0) | (table[:, 6] > 0)
            replaced = [bool(row[7] and flag) for row, flag in zip(rows, changed, strict=True)]
            record = {
                "steps": n,
                "norm_backward": math.sqrt(sums["bw2"] / n),
                "norm_step": math.sqrt(sums["step2"] / n),
                "ratio": sums["ratio"] / defined if defined else math.nan,
                "rescaled": sums["rescaled"] / n, "altered": sums["altered"] / n,
                "altered_down": sums["altered_down"] / n,
                "zeroed": sums["zeroed"] / n,
                "replaced": sum(replaced) / n,
                "unscaled": self._unscaled / n,
                "nonfinite_backward": int(sums["nonfinite"]), "sanitized": int(sums["sanitized"]),
                **self._elem_record(),
            }
            wb.writer.scalars(ctx.step, "grad_step", record)
            self._events(ctx, rows, {"zeroed": table[:, 6] > 0, "replaced": replaced})
        self._unscaled = 0

    @staticmethod
    def _feed(wb: Any, rows: list[tuple], table: np.ndarray) -> None:
        """Observed clips (steps without a wb.clip_grad_norm_ call) for ClipProbe, which
        flushes after this probe in the default order."""
        pre, post = np.sqrt(table[:, 0]), np.sqrt(table[:, 1])
        clipped = (table[:, 4] > 0) & (table[:, 2] < 1)
        limit = np.where(clipped, post, math.inf)
        wb.observed_clip_log.extend(
            (float(pre[i]), float(limit[i])) for i, row in enumerate(rows) if row[6])

    def _elem_record(self) -> dict[str, Any]:
        elems, self._elems = self._elems, []
        if not elems:
            return {"elem_samples": 0, "frac_changed": math.nan, "frac_zeroed": math.nan}
        changed, total, zeroed, nonzero = torch.stack(elems).sum(0).tolist()
        return {"elem_samples": len(elems), "frac_changed": changed / total,
                "frac_zeroed": zeroed / nonzero if nonzero else 0.0}

    @staticmethod
    def _events(ctx: StepContext, rows: list[tuple], flags: dict[str, Any]) -> None:
        """One `grad_step_change` per change and optimizer: steps flagged, the first one."""
        for change, flagged in flags.items():
            by_optimizer: dict[int, list[int]] = {}
            for row, flag in zip(rows, flagged, strict=True):
                if flag:
                    entry = by_optimizer.setdefault(row[0], [0, row[1]])
                    entry[0] += 1
            for index, (count, first) in by_optimizer.items():
                ctx.wb.writer.event(ctx.step, "grad_step_change", change=change, steps=count,
                                    first_step=first, optimizer=index)


def _select(values: torch.Tensor, at: torch.Tensor | None) -> torch.Tensor:
    return values if at is None else values.index_select(0, at)
