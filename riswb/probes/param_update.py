"""What optimizer.step actually did to the parameters (kind `param_update`).

On sampled optimizer steps the pre-step hook copies the trainable tensors into buffers the
probe keeps between samples (one `_foreach_copy_`: on CPU, freshly allocated copies cost
~18× more, in page faults, than refilling these — 2.0 ms vs 0.11 ms for the bench MLP's
0.7 M parameters) and takes ‖θ‖; the post-step hook subtracts in place and takes ‖Δθ‖:
Δθ = θ_after − θ_before, measured at optimizer.step and nowhere else (docs/failures.md #19: Δparam
measured after an EMA update looked tiny). Everything stays on the device until the flush.
Memory: one copy of the trainable parameters, held while the probe is attached.

Record (one per sampled optimizer step, `step` = the `wb.loss` step it belongs to):

* `opt_step`      — 1-based index of the optimizer step (all optimizers);
* `optimizer`, `optimizer_step` — which optimizer stepped (its index in `wb.optimizers`)
  and its own 1-based step count (sampling follows it); with several optimizers the
  tensors measured are the model's trainable ones less those only other optimizers update;
* `update_norm`   — ‖Δθ‖₂ over all trainable tensors of the model;
* `param_norm`    — ‖θ‖₂ before the step;
* `ratio`         — update_norm / param_norm (0 when both are 0, +Inf for a zero θ that moved);
* `frac_moving`   — fraction of the model's trainable tensors with Δ ≠ 0 (a tensor missing
  from the optimizer counts as not moving);
* `grad_norm`     — ‖g‖₂ of the same tensors' gradients as the step applies them (0 for a
  None grad): an empty step whose gradient was 0 had nothing to apply (a satisfied hinge or
  margin loss), which is no skip;
* `group/<g>/ratio` — the same ratio over the trainable tensors of param group g (g = group
  `name` or index); NaN (not measured) while none of its tensors is trainable.

"Trainable" is read at each sampled step (`requires_grad` now), not once when the
Workbench was built: gradual unfreezing makes a frozen backbone trainable mid-run, and it is
measured from then on, while a group frozen on purpose is not counted as one not moving.

Sampling: the first `warmup` optimizer steps (default 10), then every `sample_every`-th
(default 20; opt_step ≡ 1 mod sample_every). A sample reads the parameters four times
(copy, ‖θ‖, subtract, ‖Δθ‖): about 1 ms for the bench MLP's 0.7 M parameters on this
project's CPU, i.e. 0.25% of its 20 ms single-thread step at this default. It follows optimizer
steps, not `wb.loss` steps, so a loop that steps once per epoch is sampled too. The
registry `every` still applies on top (default 1), and so does the Workbench's observation
stride (`sampled`: on a host-bound loop a step is measured only when it is also observed).
"""

from __future__ import annotations

from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.gradients import tensor_norms
from riswb.probes.params import group_label


def _ratio(update: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    moved = torch.where(update > 0, torch.full_like(update, float("inf")), update)
    return torch.where(base > 0, update / base, moved)


class ParamUpdateProbe(Probe):
    """‖Δθ‖/‖θ‖ at optimizer.step, overall and per param group, on sampled steps."""

    name = "param_update"
    sampled = True  # steps reach it on observed cycles only (riswb.instrument.observation)

    def __init__(self, every: int | None = None, *, sample_every: int = 20, warmup: int = 10):
        super().__init__(every)
        if sample_every < 1 or warmup < 0:
            raise ValueError("sample_every must be >= 1 and warmup >= 0")
        self.sample_every = sample_every
        self.warmup = warmup
        # per optimizer: θ_before on a sampled step, then θ_before − θ
        self._buffers: dict[int, list[torch.Tensor]] = {}
        self._before: torch.Tensor | None = None  # (P,) ‖θ_p‖ before the sampled step
        self._grad_norm: torch.Tensor | None = None  # ‖g‖ the sampled step applies
        # per optimizer: (layout key, measured tensors, (G, P) membership, group labels)
        self._layouts: dict[int, tuple[Any, list[torch.Tensor], torch.Tensor, list[str]]] = {}
        self._pending: list[tuple[int, dict[str, int], list[str], torch.Tensor]] = []

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sample_every": self.sample_every, "warmup": self.warmup}

    def _due(self, opt_step: int) -> bool:
        return opt_step <= self.warmup or (opt_step - 1) % self.sample_every == 0

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        self._before = None
        index = ctx.payload.get("optimizer", 0)
        own_step = ctx.payload.get("optimizer_step", ctx.payload["opt_step"])
        if not self._due(own_step):
            return
        measured = self._layout(ctx.wb, index)[1]
        params = [p.detach() for p in measured]
        if not params:  # nothing trainable (yet): nothing to measure
            return
        buffers = self._buffers.get(index, [])
        if [(b.shape, b.dtype, b.device) for b in buffers] != [
            (p.shape, p.dtype, p.device) for p in params
        ]:
            buffers = self._buffers[index] = [torch.empty_like(p) for p in params]
        with torch.no_grad():
            torch._foreach_copy_(buffers, params)
            self._before = self._stack(torch._foreach_norm(params), ctx.wb.device)
            grads = [p.grad for p in measured]
            self._grad_norm = tensor_norms(grads, ctx.wb.device).double().square().sum().sqrt()

    def on_after_optimizer_step(self, ctx: StepContext) -> None:
        before, self._before = self._before, None
        if before is None:
            return
        wb = ctx.wb
        index = ctx.payload.get("optimizer", 0)
        _, measured, membership, labels = self._layout(wb, index)
        params, buffers = [p.detach() for p in measured], self._buffers[index]
        with torch.no_grad():
            torch._foreach_sub_(buffers, params)  # −Δθ: same norms
            update = self._stack(torch._foreach_norm(buffers), wb.device)
            usq, psq = update.square(), before.square()
            update_norm, param_norm = usq.sum().sqrt(), psq.sum().sqrt()
            parts = [
                update_norm.reshape(1),
                param_norm.reshape(1),
                _ratio(update_norm, param_norm).reshape(1),
                (update != 0).to(torch.float64).mean().reshape(1),
                self._grad_norm.reshape(1),
            ]
            if membership.shape[0]:
                # where, not a matmul: 0·NaN would spread one group's NaN to all groups
                zero = usq.new_zeros(())
                group_u = torch.where(membership, usq, zero).sum(1).sqrt()
                group_p = torch.where(membership, psq, zero).sum(1).sqrt()
                # a group with no trainable tensor right now is frozen on purpose: unmeasured
                empty = ~membership.any(1)
                parts.append(_ratio(group_u, group_p).masked_fill(empty, float("nan")))
            vector = torch.cat(parts)
        head = {"opt_step": ctx.payload["opt_step"], "optimizer": index,
                "optimizer_step": ctx.payload.get("optimizer_step", ctx.payload["opt_step"])}
        self._pending.append((ctx.step, head, labels, vector))

    def flush(self, ctx: StepContext) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        rows = [v.tolist() for v in _to_host([v for *_, v in pending])]
        for (step, head, labels, _), row in zip(pending, rows, strict=True):
            record = {
                **head,
                "update_norm": row[0],
                "param_norm": row[1],
                "ratio": row[2],
                "frac_moving": row[3],
                "grad_norm": row[4],
            }
            record.update({f"group/{g}/ratio": r for g, r in zip(labels, row[5:], strict=True)})
            ctx.wb.writer.scalars(step, "param_update", record)

    @staticmethod
    def _stack(norms: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        return torch.stack([n.to(device=device, dtype=torch.float64) for n in norms])

    def _layout(
        self, wb: Any, index: int
    ) -> tuple[Any, list[torch.Tensor], torch.Tensor, list[str]]:
        """Optimizer `index`'s measured tensors — the model's trainable tensors less those
        that only OTHER optimizers update (so a tensor in no optimizer counts, as not
        moving) — and its (G, P) group membership and labels; rebuilt when groups change."""
        optimizers = wb.optimizers
        trainable = _trainable(wb)
        key = (tuple(tuple(id(p) for p in g["params"]) for o in optimizers
                     for g in o.param_groups), tuple(id(p) for p in trainable))
        cached = self._layouts.get(index)
        if cached is not None and cached[0] == key:
            return cached
        groups = optimizers[index].param_groups
        own = {id(p) for g in groups for p in g["params"]}
        others = {id(p) for i, o in enumerate(optimizers) if i != index
                  for g in o.param_groups for p in g["params"]} - own
        measured = [p for p in trainable if id(p) not in others]
        position = {id(p): i for i, p in enumerate(measured)}
        membership = torch.zeros(len(groups), len(measured), dtype=torch.bool)
        for g, group in enumerate(groups):
            for p in group["params"]:
                if id(p) in position:
                    membership[g, position[id(p)]] = True
        labels = [group_label(group, g) for g, group in enumerate(groups)]
        cached = self._layouts[index] = (key, measured, membership.to(wb.device), labels)
        return cached


def _trainable(wb: Any) -> list[torch.Tensor]:
    """The model's tensors that require grad now (the Workbench's list is taken at
    construction), plus any tensor of that list no longer in the model."""
    live = [p for p in wb.model.parameters() if p.requires_grad]
    seen = {id(p) for p in live}
    return live + [p for p in wb.params if id(p) not in seen and p.requires_grad]


def _to_host(vectors: list[torch.Tensor]) -> list[torch.Tensor]:
    """One transfer for equally long vectors, else one each."""
    if len({v.shape for v in vectors}) == 1:
        return list(torch.stack(vectors).cpu())
    return [v.cpu() for v in vectors]
