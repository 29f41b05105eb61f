"""Worked example: WeightWatcher-style spectra of the weight matrices (kind `weight_spectrum`).

Copy this file into your own `probes/` folder and edit it; every `riswb` command loads the
Probe subclasses it finds there. What it shows:

* a probe that needs no training event at all: it works in `flush()`, which the Workbench
  calls once per log interval, and keeps its own slower cadence (`every` steps);
* reading the model through `ctx.wb.model` and writing through `ctx.wb.writer`.

For every nn.Linear and nn.Conv{1,2,3}d weight W (a conv kernel is read as the matrix
out × (in·k…)), from the singular values σ of W (eigenvalues λ = σ² of WᵀW, the empirical
spectral density WeightWatcher fits):

* `<layer>/spectral_norm` — σ_max;
* `<layer>/stable_rank`   — ‖W‖_F² / σ_max² (between 1 and rank W; collapses towards 1 when
  one direction dominates);
* `<layer>/alpha`         — power-law exponent of the ESD tail by the Hill estimator on the
  top `tail` fraction (k values) of λ, descending: α = 1 + (k − 1) / Σ_{i<k} log(λᵢ / λ_k),
  for a density p(λ) ∝ λ^(−α) above λ_k. WeightWatcher reads α ≈ 2–4 as a
  well-trained layer, α > 6 as under-trained (close to random), α < 2 as over-fitted. It is
  NaN for a layer with fewer than 4 eigenvalues (no tail to fit).

Cost: one batched `svdvals` per layer every `every` steps (default 100), on the host side of
a flush; nothing per step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from riswb.instrument.hooks import Probe, StepContext

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def hill_alpha(eigs: torch.Tensor, tail: float = 0.5) -> float:
    """Hill estimate of the power-law exponent of the largest eigenvalues (descending)."""
    eigs = eigs[eigs > 0]
    k = max(int(math.ceil(tail * eigs.numel())), 2)
    if eigs.numel() < 4 or k > eigs.numel():
        return float("nan")
    top = eigs[:k]
    logs = torch.log(top / top[-1])
    denom = float(logs.sum())
    return 1.0 + (k - 1) / denom if denom > 0 else float("inf")


def weight_stats(weight: torch.Tensor, tail: float = 0.5) -> dict[str, float]:
    """spectral_norm, stable_rank and alpha of one weight matrix (any shape, rows = outputs)."""
    W = weight.detach().reshape(weight.shape[0], -1).double()
    sigma = torch.linalg.svdvals(W)
    top = float(sigma[0]) if sigma.numel() else 0.0
    frob2 = float((sigma**2).sum())
    return {
        "spectral_norm": top,
        "stable_rank": frob2 / top**2 if top > 0 else float("nan"),
        "alpha": hill_alpha(sigma**2, tail),
    }


class WeightSpectrumProbe(Probe):
    """Spectral norm, stable rank and power-law alpha of each Linear/Conv weight."""

    def __init__(self, every: int = 100, tail: float = 0.5):
        super().__init__()
        self.interval = every  # our own cadence: `every` of the base class governs step events
        self.tail = tail
        self._last: int | None = None

    def describe(self) -> dict:
        return {**super().describe(), "interval": self.interval, "tail": self.tail}

    def flush(self, ctx: StepContext) -> None:
        if self._last is not None and ctx.step - self._last < self.interval:
            return
        self._last = ctx.step
        record = {}
        for name, module in ctx.wb.model.named_modules():
            if isinstance(module, LAYERS) and getattr(module, "weight", None) is not None:
                for key, value in weight_stats(module.weight, self.tail).items():
                    record[f"{name or 'model'}/{key}"] = value
        if record:
            ctx.wb.writer.scalars(ctx.step, "weight_spectrum", record)
