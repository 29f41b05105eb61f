"""Per-term gradients at the model OUTPUT, every log interval (kinds `term_grad_out`,
`term_cosine_out`; event `term_no_grad`).

The exact per-parameter view (riswb.probes.term_gradients) costs about a backward per term,
so it is sampled sparsely. This one is dense and cheap: on the first `wb.loss` call of every
log interval (every `stride`-th, see below) and on the first `front` calls (default 3) the
probe takes, for every term t, g_t = ∂(w_t·term_t)/∂y over the tensors y that the root
module's forward returned since the previous `wb.loss` call (tensors found in tuples, lists,
dicts and dataclasses of the output, requiring grad), with `torch.autograd.grad(...,
retain_graph=True, allow_unused=True)`: the backward walks only the loss head between the
outputs and the terms, never the network. When the loss head itself is costly
(eigendecompositions in the reference model's loss) the probe keeps to `budget` (1%) of the
loop's busy time per `wb.loss` call (from a cycle's first forward to its optimizer step, as
the Workbench smooths it): right after each sample it sets `stride`, the number of log
intervals between samples (1 when cheap; in the manifest). `every=N` samples every N calls
instead, whatever a sample costs. Records (at the sampled step):

* `term_grad_out`   {term: ‖g_t‖ over all captured outputs}; 0 for a term that does not
  depend on the outputs (detached, a constant, a regulariser of the weights alone);
* `term_cosine_out` {pair key (riswb.probes.term_keys: "a|b", `|` and `\\` escaped):
  ⟨g_a, g_b⟩/(‖g_a‖‖g_b‖)}, NaN when either is 0 (written with ≥ 2 terms).

A term that depends on the outputs only through non-differentiable paths reads 0 here and
its real gradient shows in `term_grad`; one that reaches the parameters without the
outputs (weight decay) also reads 0 here: the two kinds answer different questions (how
terms pull on the prediction vs on the weights).

Event `term_no_grad` {`names`, `first_step`}: at `wb.loss` time, terms that are not tensors
or carry neither `requires_grad` nor a graph have no path to any trainable parameter — a
Python attribute read per term, on the calls of the cycles the Workbench observes (every
call of a run's first cycles, and of a loop it observes whole; riswb.instrument.observation)
and of sampled calls; each name is reported once, at the first step it was seen.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch

from riswb.instrument.hooks import Event, Probe, StepContext
from riswb.probes.term_gradients import _scalar, _weight
from riswb.probes.term_keys import gradient_terms, pair_key

_MAX_CAPTURED = 8  # forwards kept between two wb.loss calls (eval forwards with grad on)


def output_tensors(value: Any) -> list[torch.Tensor]:
    """The differentiable floating tensors inside a forward's output, in a stable order."""
    found: list[torch.Tensor] = []
    stack = [value]
    while stack:
        item = stack.pop(0)
        if isinstance(item, torch.Tensor):
            if item.requires_grad and (item.is_floating_point() or item.is_complex()):
                found.append(item)
        elif isinstance(item, dict):
            stack[:0] = list(item.values())
        elif isinstance(item, (list, tuple)):
            stack[:0] = list(item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack[:0] = [getattr(item, f.name) for f in dataclasses.fields(item)]
    return found


class TermOutputProbe(Probe):
    """Norms and cosines of per-term gradients w.r.t. the model's outputs, per interval."""

    name = "term_output"

    def __init__(self, every: int | None = None, *, front: int = 3, budget: float = 0.01):
        """`every`: sample every N `wb.loss` calls (after the first `front`), whatever a
        sample costs; None: every log interval, spaced to `budget`."""
        super().__init__(every)
        if front < 0 or budget <= 0:
            raise ValueError("front must be >= 0 and budget > 0")
        # the sampling interval, not a schedule of the handlers: they must see every call
        # to capture the due one's forwards (the registry's every=N would skip them)
        self.sample_every, self.every = every, 1
        self.front, self.budget = front, budget
        self.stride = 1  # log intervals between samples (grows when a sample is costly)
        self._captured: list[Any] = []
        self._pending: list[tuple[int, list[str], torch.Tensor]] = []
        self._no_grad: set[str] = set()
        self._capturing = True  # AFTER_FORWARD not paused (see on_after_loss)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "front": self.front, "budget": self.budget,
                "stride": self.stride, "sample_every": self.sample_every}

    def _due(self, wb: Any) -> bool:
        calls = wb.n_loss + 1  # this forward belongs to the next wb.loss call
        period = self.sample_every or wb.log_every * self.stride
        return calls <= self.front or (calls - 1) % period == 0

    def on_after_forward(self, ctx: StepContext) -> None:
        if self._due(ctx.wb) and len(self._captured) < _MAX_CAPTURED:
            self._captured.append(ctx.payload.get("output"))

    def on_after_loss(self, ctx: StepContext) -> None:
        wb = ctx.wb
        start = time.perf_counter()
        if self._observe(ctx):
            self._set_stride(time.perf_counter() - start, wb)
        # the next call's forwards are captured only when it samples: between samples
        # the forward hook does not call this probe at all
        due = self._due(wb)
        if due != self._capturing:
            self._capturing = due
            (wb.registry.resume if due else wb.registry.pause)(self, Event.AFTER_FORWARD)

    def _set_stride(self, cost: float, wb: Any) -> None:
        """Keep the samples within the budget of the loop's own busy time per `wb.loss`
        call, as the Workbench smooths it over the cycles (their first forward to the end of
        their optimizer step). Wall time between two calls would also count data loading
        and, in an interleaved benchmark, the other loops' turns, and set the stride too
        low. Before the first cycle ends the stride stays."""
        per_call = wb.log_interval.busy_per_call
        if per_call and self.sample_every is None:
            per_step = cost / (wb.log_every * per_call)
            self.stride = max(1, math.ceil(per_step / self.budget))

    def _observe(self, ctx: StepContext) -> bool:
        """Report terms without a graph; sample if forwards were captured (True then)."""
        captured, self._captured = self._captured, []
        if not captured and not ctx.wb.registry.observing:
            return False  # a cycle the Workbench does not observe, and no sample due
        terms = gradient_terms(ctx.payload)
        dead = [n for n, t in terms.items() if n not in self._no_grad and not (
            isinstance(t, torch.Tensor) and (t.requires_grad or t.grad_fn is not None))]
        if dead:
            self._no_grad.update(dead)
            ctx.wb.writer.event(ctx.step, "term_no_grad", names=dead, first_step=ctx.step)
        outputs = [t for value in captured for t in output_tensors(value)]
        if terms and outputs:
            names = list(terms)
            weights = ctx.payload.get("weights")
            scaled = [_weight(weights, n) * _scalar(terms[n]) if isinstance(terms[n], torch.Tensor)
                      else None for n in names]
            self._pending.append((ctx.step, names, self._gram(scaled, outputs)))
            return True
        return False

    @staticmethod
    def _gram(terms: list[torch.Tensor | None], outputs: list[torch.Tensor]) -> torch.Tensor:
        """(T, T) float64 Gram matrix of the terms' gradients w.r.t. all `outputs`."""
        device = outputs[0].device
        flat_outputs = [torch.view_as_real(o) if o.is_complex() else o for o in outputs]
        rows = []
        for term in terms:
            grads: Any = (None,) * len(outputs)
            if term is not None and term.requires_grad:
                grads = torch.autograd.grad(term, outputs, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([
                torch.zeros(o.numel(), dtype=torch.float64, device=device) if g is None
                else (torch.view_as_real(g) if g.is_complex() else g).reshape(-1).to(
                    device=device, dtype=torch.float64)
                for g, o in zip(grads, flat_outputs, strict=True)
            ]))
        matrix = torch.stack(rows)
        return matrix @ matrix.T

    def flush(self, ctx: StepContext) -> None:
        pending, self._pending = self._pending, []
        for step, names, gram in pending:
            norms = gram.diagonal().clamp_min(0).sqrt()
            cosine = (gram / (norms[:, None] * norms[None, :])).clamp(-1.0, 1.0)
            norm_list, cos_list = norms.tolist(), cosine.tolist()
            ctx.wb.writer.scalars(step, "term_grad_out", dict(zip(names, norm_list, strict=True)))
            if len(names) > 1:
                pairs = {pair_key(a, b): cos_list[i][j] for i, a in enumerate(names)
                         for j, b in enumerate(names) if i < j}
                ctx.wb.writer.scalars(step, "term_cosine_out", pairs)
