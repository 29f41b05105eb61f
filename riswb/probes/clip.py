"""Gradient clipping through `wb.clip_grad_norm_` (kind `clip`).

The Workbench appends `(pre-clip norm, max_norm)` per call to `wb.clip_log` (the norm a
device tensor, max_norm as given: no sync); this probe turns the calls since the previous
flush into one record and clears the log. Aggregation per flush (one record, `step` = the
flush step):

* `norm`     — mean pre-clip total norm over the calls;
* `max_norm` — the last call's max_norm;
* `ratio`    — mean of min(1, max_norm / norm) (1 = untouched; a NaN norm gives NaN);
* `clipped`  — fraction of calls with norm > max_norm (0/1 when there was one call);
* `calls`    — number of clip calls aggregated (extra key: lets a rule weigh the fraction);
* `opt_step` — the Workbench's optimizer-step count at the flush (internals §3: records
  about optimizer steps carry it).

* `observed` — 0: from `wb.clip_grad_norm_` calls (above); 1: no such call in the interval,
  the record comes from what GradStepProbe saw at each optimizer step (torch's own
  `clip_grad_norm_`, or any uniform downscale after the backward): `calls` = observed steps,
  `norm` = mean (unscaled) norm at backward end, `clipped` = fraction of those steps whose
  gradients were uniformly scaled down, `ratio` = mean of min(1, post/pre), `max_norm` =
  the largest post-clip norm of a clipped step (≈ the max_norm used; NaN when none clipped).

`clip-saturated` reads `clipped` close to 1 on most records.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext


def _column(values: list[Any]) -> list[float]:
    """Python floats from tensors and/or numbers: one stack and one host copy for the
    tensors (0-dim, as `wb.clip_grad_norm_` and grad_step store them, need no reshape)."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        return [float(v) for v in values]
    device = tensors[0].device
    if all(t.dim() == 0 and t.device == device for t in tensors):
        stacked = torch.stack(tensors)
    else:
        stacked = torch.stack([t.detach().reshape(()).to(device) for t in tensors])
    floats = iter(stacked.detach().double().tolist())
    return [next(floats) if isinstance(v, torch.Tensor) else float(v) for v in values]


def clip_ratio(norm: float, limit: float) -> float:
    """min(1, limit / norm) as float arithmetic has it: NaN stays NaN (as torch.clamp keeps
    it), limit/0 is ±inf (1 after the min) or NaN for 0/0, inf/inf is NaN."""
    if norm == 0.0:
        quotient = math.nan if limit == 0.0 or math.isnan(limit) else math.copysign(
            math.inf, limit)
    else:
        quotient = limit / norm
    return quotient if math.isnan(quotient) or quotient < 1.0 else 1.0


def clip_summary(entries: list[tuple[Any, Any]]) -> dict[str, float]:
    """Aggregate (pre-clip norm, max_norm) pairs into the `clip` record, in plain Python
    floats after one host copy: a flush holds a few dozen pairs, for which numpy's per-call
    overhead cost more than the arithmetic (this runs once per log interval)."""
    norms = _column([norm for norm, _ in entries])
    limits = _column([limit for _, limit in entries])
    count = len(entries)
    return {
        "norm": sum(norms) / count,
        "max_norm": limits[-1],
        "ratio": sum(clip_ratio(n, lim) for n, lim in zip(norms, limits, strict=True)) / count,
        "clipped": sum(n > lim for n, lim in zip(norms, limits, strict=True)) / count,
        "calls": count,
    }


class ClipProbe(Probe):
    """Summarises `wb.clip_grad_norm_` calls once per flush."""

    name = "clip"

    def flush(self, ctx: StepContext) -> None:
        wb = ctx.wb
        explicit, observed = list(wb.clip_log), list(wb.observed_clip_log)
        wb.clip_log.clear()
        wb.observed_clip_log.clear()
        if explicit:
            record = {**clip_summary(explicit), "observed": 0}
        elif observed:
            record = {**clip_summary(observed), "observed": 1}
            limits = [v for v in _column([lim for _, lim in observed]) if math.isfinite(v)]
            record["max_norm"] = max(limits) if limits else math.nan
        else:
            return
        wb.writer.scalars(ctx.step, "clip", {"opt_step": wb.opt_step, **record})
