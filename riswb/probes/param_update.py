"""What optimizer.step actually did to the parameters (kind `param_update`).

On sampled optimizer steps the pre-step hook copies the trainable tensors into buffers the
probe keeps between samples (one `_foreach_copy_`: on CPU, freshly allocated copies cost
~18× more, in page faults, than refilling these — 2.0 ms vs 0.11 ms for the bench MLP's
0.7 M parameters) and takes ‖θ‖; the post-step hook subtracts in place and takes ‖Δθ‖:
Δθ = θ_after − θ_before, measured at optimizer.step and nowhere else (docs/failures.md #19: Δparam
measured after an EMA update looked tiny). Everything stays on the device until the flush.
Memory: one copy of the trainable parameters, held while the probe is attached.

Record (one per sampled optimizer step, `step` = the `wb.loss` step it belongs to):

* `opt_step`      — 1-based index of the optimizer step;
* `update_norm`   — ‖Δθ‖₂ over all trainable tensors of the model;
* `param_norm`    — ‖θ‖₂ before the step;
* `ratio`         — update_norm / param_norm (0 when both are 0, +Inf for a zero θ that moved);
* `frac_moving`   — fraction of the model's trainable tensors with Δ ≠ 0 (a tensor missing
  from the optimizer counts as not moving);
* `group/<g>/ratio` — the same ratio over the trainable tensors of param group g (g = group
  `name` or index).

Sampling: the first `warmup` optimizer steps (default 10), then every `sample_every`-th
(default 20; opt_step ≡ 1 mod sample_every). A sample reads the parameters four times
(copy, ‖θ‖, subtract, ‖Δθ‖): about 1 ms for the bench MLP's 0.7 M parameters on this
project's CPU, i.e. 0.25% of its 20 ms single-thread step at this default. It follows optimizer
steps, not `wb.loss` steps, so a loop that steps once per epoch is sampled too. The
registry `every` still applies on top (default 1).
"""

from __future__ import annotations

from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.params import group_label


def _ratio(update: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    moved = torch.where(update > 0, torch.full_like(update, float("inf")), update)
    return torch.where(base > 0, update / base, moved)


class ParamUpdateProbe(Probe):
    """‖Δθ‖/‖θ‖ at optimizer.step, overall and per param group, on sampled steps."""

    name = "param_update"

    def __init__(self, every: int | None = None, *, sample_every: int = 20, warmup: int = 10):
        super().__init__(every)
        if sample_every < 1 or warmup < 0:
            raise ValueError("sample_every must be >= 1 and warmup >= 0")
        self.sample_every = sample_every
        self.warmup = warmup
        self._buffers: list[torch.Tensor] = []  # θ_before on a sampled step, then θ_before − θ
        self._before: torch.Tensor | None = None  # (P,) ‖θ_p‖ before the sampled step
        self._layout_key: Any = None
        self._membership: torch.Tensor | None = None  # (G, P) bool: p in group g
        self._labels: list[str] = []
        self._pending: list[tuple[int, int, list[str], torch.Tensor]] = []

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sample_every": self.sample_every, "warmup": self.warmup}

    def sampled(self, opt_step: int) -> bool:
        return opt_step <= self.warmup or (opt_step - 1) % self.sample_every == 0

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        self._before = None
        if not ctx.wb.params or not self.sampled(ctx.payload["opt_step"]):
            return
        params = [p.detach() for p in ctx.wb.params]
        if [(b.shape, b.dtype, b.device) for b in self._buffers] != [
            (p.shape, p.dtype, p.device) for p in params
        ]:
            self._buffers = [torch.empty_like(p) for p in params]
        with torch.no_grad():
            torch._foreach_copy_(self._buffers, params)
            self._before = self._stack(torch._foreach_norm(params), ctx.wb.device)

    def on_after_optimizer_step(self, ctx: StepContext) -> None:
        before, self._before = self._before, None
        if before is None:
            return
        wb = ctx.wb
        params = [p.detach() for p in wb.params]
        with torch.no_grad():
            torch._foreach_sub_(self._buffers, params)  # −Δθ: same norms
            update = self._stack(torch._foreach_norm(self._buffers), wb.device)
            membership = self._groups(wb)
            usq, psq = update.square(), before.square()
            update_norm, param_norm = usq.sum().sqrt(), psq.sum().sqrt()
            parts = [
                update_norm.reshape(1),
                param_norm.reshape(1),
                _ratio(update_norm, param_norm).reshape(1),
                (update != 0).to(torch.float64).mean().reshape(1),
            ]
            if membership.shape[0]:
                # where, not a matmul: 0·NaN would spread one group's NaN to all groups
                zero = usq.new_zeros(())
                group_u = torch.where(membership, usq, zero).sum(1).sqrt()
                group_p = torch.where(membership, psq, zero).sum(1).sqrt()
                parts.append(_ratio(group_u, group_p))
            vector = torch.cat(parts)
        self._pending.append((ctx.step, ctx.payload["opt_step"], list(self._labels), vector))

    def flush(self, ctx: StepContext) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        rows = [v.tolist() for v in _to_host([v for *_, v in pending])]
        for (step, opt_step, labels, _), row in zip(pending, rows, strict=True):
            record = {
                "opt_step": opt_step,
                "update_norm": row[0],
                "param_norm": row[1],
                "ratio": row[2],
                "frac_moving": row[3],
            }
            record.update({f"group/{g}/ratio": r for g, r in zip(labels, row[4:], strict=True)})
            ctx.wb.writer.scalars(step, "param_update", record)

    @staticmethod
    def _stack(norms: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        return torch.stack([n.to(device=device, dtype=torch.float64) for n in norms])

    def _groups(self, wb: Any) -> torch.Tensor:
        groups = wb.optimizer.param_groups
        key = tuple(tuple(id(p) for p in g["params"]) for g in groups)
        if key != self._layout_key or self._membership is None:
            index = {id(p): i for i, p in enumerate(wb.params)}
            membership = torch.zeros(len(groups), len(wb.params), dtype=torch.bool)
            for g, group in enumerate(groups):
                for p in group["params"]:
                    if id(p) in index:
                        membership[g, index[id(p)]] = True
            self._membership = membership.to(wb.device)
            self._labels = [group_label(group, g) for g, group in enumerate(groups)]
            self._layout_key = key
        return self._membership


def _to_host(vectors: list[torch.Tensor]) -> list[torch.Tensor]:
    """One transfer for equally long vectors, else one each."""
    if len({v.shape for v in vectors}) == 1:
        return list(torch.stack(vectors).cpu())
    return [v.cpu() for v in vectors]
