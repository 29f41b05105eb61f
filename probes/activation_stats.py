"""Worked example: activation statistics through forward hooks (kind `activations`).

Copy this file into your own `probes/` folder and edit it. What it shows:

* attaching PyTorch hooks of your own at RUN_START and removing them at RUN_END;
* sampling: the hooks do real work only on every `every`-th training forward of the model
  (eval forwards are ignored), so the probe costs nothing on the other steps;
* accumulating on the device and converting to numbers once, in `flush()`; a forward's
  statistics are committed at the AFTER_LOSS of its batch, so each record covers exactly
  the batches whose `wb.loss` step it spans.

Watched modules: every activation module (ReLU, GELU, Tanh, Sigmoid, …); a model that calls
`F.relu` in its forward has none, so the probe then watches the Linear/Conv layers instead
(pre-activations: a dead ReLU unit shows up there as a column that is always negative —
`neg_frac` near 1). Per watched module `m`, means over the sampled forwards of the interval:

* `<m>/mean`, `<m>/std`  — of the module's output;
* `<m>/zero_frac`        — fraction of exactly-zero outputs (dead ReLUs: near 1 for a layer
  whose units never fire);
* `<m>/neg_frac`         — fraction of negative outputs (for Linear/Conv layers);
* `<m>/sat_frac`         — fraction of saturated outputs, for bounded activations only:
  |y| > 0.99 for Tanh/Hardtanh/Softsign, y < 0.01 or y > 0.99 for Sigmoid.
"""

from __future__ import annotations

import torch
from torch import nn

from riswb.instrument.hooks import Probe, StepContext

ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Softplus, nn.Tanh, nn.Hardtanh, nn.Sigmoid, nn.Hardsigmoid, nn.Softsign,
)
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
SYMMETRIC_BOUNDED = (nn.Tanh, nn.Hardtanh, nn.Softsign)
UNIT_BOUNDED = (nn.Sigmoid, nn.Hardsigmoid)
STATS = ("mean", "std", "zero_frac", "neg_frac", "sat_frac")


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


def activation_stats(y: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """(5,) float32: mean, std, zero_frac, neg_frac, sat_frac (NaN if unbounded) of y."""
    y = y.detach()
    if y.is_complex():
        y = y.abs()
    y = y.float()
    if isinstance(module, SYMMETRIC_BOUNDED):
        sat = (y.abs() > 0.99).float().mean()
    elif isinstance(module, UNIT_BOUNDED):
        sat = ((y < 0.01) | (y > 0.99)).float().mean()
    else:
        sat = torch.full((), float("nan"), device=y.device)
    std = y.std() if y.numel() > 1 else torch.zeros((), device=y.device)
    return torch.stack([y.mean(), std, (y == 0).float().mean(), (y < 0).float().mean(), sat])


class ActivationStatsProbe(Probe):
    """Mean, std, zero/negative/saturated fractions of module outputs, sampled."""

    def __init__(self, every: int = 10, types: tuple[type[nn.Module], ...] | None = None):
        super().__init__()
        self.interval = every  # forwards between samples (our own counter, see _arm)
        self.types = types
        self._handles: list = []
        self._watched: dict[str, nn.Module] = {}
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._pending: dict[str, torch.Tensor] = {}  # this batch's stats, until its wb.loss
        self._forwards = 0
        self._armed = False

    def describe(self) -> dict:
        return {**super().describe(), "interval": self.interval, "watched": list(self._watched)}

    # -- hooks ----------------------------------------------------------------------------

    def _attach(self, model: nn.Module) -> None:
        if self._handles:
            return
        leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
        types = self.types or ACTIVATIONS
        chosen = [(n, m) for n, m in leaves if isinstance(m, types)]
        if not chosen and self.types is None:
            chosen = [(n, m) for n, m in leaves if isinstance(m, LAYERS)]
        self._watched = {name or "model": module for name, module in chosen}
        self._handles.append(model.register_forward_pre_hook(self._arm))
        for name, module in self._watched.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _arm(self, model: nn.Module, args) -> None:
        """Root-model pre-hook: decide whether this forward is sampled."""
        self._armed = model.training and self._forwards % self.interval == 0
        if model.training:
            self._forwards += 1

    def _hook(self, name: str):
        def hook(module: nn.Module, args, output) -> None:
            if not self._armed:
                return
            y = _first_tensor(output)
            if y is None or y.numel() == 0:
                return
            self._pending[name] = activation_stats(y, module)

        return hook

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- events ---------------------------------------------------------------------------

    def on_run_start(self, ctx: StepContext) -> None:
        self._attach(ctx.wb.model)

    def on_after_loss(self, ctx: StepContext) -> None:
        # the forward this loss came from belongs to this step: commit its stats now (a
        # flush inside this wb.loss call has already run, so they go to the next record)
        for name, stats in self._pending.items():
            seen = self._sums.get(name)
            self._sums[name] = stats if seen is None else seen + stats
            self._counts[name] = self._counts.get(name, 0) + 1
        self._pending.clear()
        # a probe added after RUN_START attaches here; from the next forward on it samples
        self._attach(ctx.wb.model)

    def on_run_end(self, ctx: StepContext) -> None:
        self._detach()

    def flush(self, ctx: StepContext) -> None:
        if not self._sums:
            return
        names = list(self._sums)
        means = torch.stack([self._sums[n] / self._counts[n] for n in names]).tolist()
        record = {}
        for name, row in zip(names, means, strict=True):
            module = self._watched[name]
            for stat, value in zip(STATS, row, strict=True):
                if stat == "sat_frac" and not isinstance(module, SYMMETRIC_BOUNDED + UNIT_BOUNDED):
                    continue
                if stat == "neg_frac" and not isinstance(module, LAYERS):
                    continue
                record[f"{name}/{stat}"] = value
        ctx.wb.writer.scalars(ctx.step, "activations", record)
        self._sums.clear()
        self._counts.clear()
