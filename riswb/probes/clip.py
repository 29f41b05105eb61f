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

import numpy as np
import torch

from riswb.instrument.hooks import Probe, StepContext


def _column(values: list[Any], device: torch.device) -> torch.Tensor:
    """(N,) float64 on `device` from tensors and/or numbers, in as few ops as possible."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        return torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if len(tensors) == len(values) and all(v.device == device for v in tensors):
        return torch.stack([v.detach().reshape(()) for v in tensors]).to(torch.float64)
    return torch.stack([
        v.detach().to(device=device, dtype=torch.float64).reshape(())
        if isinstance(v, torch.Tensor)
        else torch.tensor(float(v), dtype=torch.float64, device=device)
        for v in values
    ])


def clip_summary(entries: list[tuple[Any, Any]]) -> dict[str, float]:
    """Aggregate (pre-clip norm, max_norm) pairs into the `clip` record (one stack and one
    host copy, then numpy: the flush reads these numbers anyway)."""
    device = next(
        (v.device for pair in entries for v in pair if isinstance(v, torch.Tensor)),
        torch.device("cpu"),
    )
    norms, limits = (_column([pair[i] for pair in entries], device).cpu().numpy() for i in (0, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.minimum(limits / norms, 1.0)  # NaN stays NaN, as torch.clamp keeps it
    return {
        "norm": float(norms.mean()),
        "max_norm": float(limits[-1]),
        "ratio": float(ratio.mean()),
        "clipped": float((norms > limits).mean()),
        "calls": len(entries),
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
            limits = [v for v in _column([lim for _, lim in observed], wb.device).tolist()
                      if math.isfinite(v)]
            record["max_norm"] = max(limits) if limits else math.nan
        else:
            return
        wb.writer.scalars(ctx.step, "clip", {"opt_step": wb.opt_step, **record})
