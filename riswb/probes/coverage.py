"""Optimizer coverage (event `coverage`): which trainable tensors the optimizer updates.

At run start, and again whenever the optimizer's parameter groups change (a group added with
`add_param_group`, tensors appended to a group's list; checked before every optimizer step
from the group sizes, a few dict reads) or the model's own tensors do (a head replaced after
the optimizer was built; checked at each flush), the probe writes one `coverage` event: the
fields of `riswb.probes.params.CoverageAudit` (missing heads are docs/failures.md #6) plus
`reason` ("start" | "param_groups_changed" | "model_changed"). With several optimizers
(`Workbench(m, [a, b])`) the audit is of their union: a tensor in two optimizers is
`duplicated`, one in none `missing`, and group labels read `opt/<i>/<label>`. Names have
wrapper prefixes stripped. A tensor that
becomes trainable after the start (gradual unfreezing) triggers one more audit (reason
"trainable_changed": is it in the optimizer?); tensors seen trainable once are not audited
again, so a GAN that toggles requires_grad every step is audited about twice. A warm-up
that merely *starts* at lr 0 is lr_trace's business, not a zero-lr group.

Event `coverage_grads` {`no_grad`: names of the `missing` tensors that received no gradient
in the run so far, `watched`: how many missing tensors were watched, `backwards`: backward
passes seen}, written at the first flush after a backward and again whenever `no_grad`
shrinks (and at run end if it changed). A missing tensor that requires grad but never gets
one (a KD teacher run only under torch.no_grad) is effectively frozen: leaving it out of the
optimizer loses nothing. "Received" means its `.grad` object or that object's in-place
version counter changed since it was first watched (a stale gradient left by an earlier
loop, e.g. the teacher's pre-training, does not count): at every backward, a weakref and an
int compare per still-gradient-free missing tensor, no host sync; a tensor is dropped from
the watch once a gradient arrived."""

from __future__ import annotations

import torch

from riswb.instrument.hooks import Event, Probe, StepContext
from riswb.probes.params import CoverageAudit, audit_coverage, strip_wrappers
from riswb.probes.tensor_mark import TensorMark, mark, unchanged


def _grad_key(p: torch.Tensor) -> TensorMark | None:
    return None if p.grad is None else mark(p.grad)


def _grad_changed(p: torch.Tensor, key: TensorMark | None) -> bool:
    grad = p.grad
    return grad is not None and (key is None or not unchanged(key, grad))


def _signature(optimizers: list[torch.optim.Optimizer]) -> tuple[int, ...]:
    return tuple(len(group["params"]) for opt in optimizers for group in opt.param_groups)


class CoverageProbe(Probe):
    """Audits optimizer coverage at start and whenever the param groups change."""

    name = "coverage"

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._signature: tuple[int, ...] | None = None
        self._trainable: set[int] = set()  # ids of the model's tensors ever seen trainable
        self._untrained: list[torch.nn.Parameter] = []  # the model's tensors never trainable
        self.last: CoverageAudit | None = None
        # missing tensors not yet seen to receive a gradient: name -> (param, grad key)
        self._watch: dict[str, tuple[torch.Tensor, TensorMark | None]] = {}
        self._watched = 0
        self._reported: frozenset[str] | None = None
        self._model_ids: frozenset[int] = frozenset()  # the model's tensors at the last audit

    def on_run_start(self, ctx: StepContext) -> None:
        self._audit(ctx, "start")

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        if _signature(ctx.wb.optimizers) != self._signature:
            self._audit(ctx, "param_groups_changed")
        elif any(p.requires_grad for p in self._untrained):
            self._audit(ctx, "trainable_changed")

    def _audit(self, ctx: StepContext, reason: str) -> None:
        wb = ctx.wb
        self._signature = _signature(wb.optimizers)
        self._model_ids = frozenset(id(p) for p in wb.model.parameters())
        self._trainable.update(id(p) for p in wb.model.parameters() if p.requires_grad)
        # the tensors never seen trainable: the only ones a step must look at (walking the
        # model's parameters every step costs a deep model more than its optimizer step)
        self._untrained = [p for p in wb.model.parameters() if id(p) not in self._trainable]
        self.last = audit_coverage(wb.model, wb.optimizers)
        wb.writer.event(ctx.step, "coverage", **self.last.to_payload(), reason=reason)
        missing = set(self.last.missing)
        named = {strip_wrappers(n): p for n, p in wb.model.named_parameters()}
        self._watch = {n: self._watch.get(n) or (named[n], _grad_key(named[n]))
                       for n in missing if n in named}
        self._watched = max(self._watched, len(self._watch))
        # the backward hook matters only while some missing tensor is watched
        (wb.registry.resume if self._watch else wb.registry.pause)(self, Event.AFTER_BACKWARD)

    def on_after_backward(self, ctx: StepContext) -> None:
        arrived = [n for n, (p, key) in self._watch.items() if _grad_changed(p, key)]
        for name in arrived:
            del self._watch[name]
        if not self._watch:
            ctx.wb.registry.pause(self, Event.AFTER_BACKWARD)

    def flush(self, ctx: StepContext) -> None:
        # a module added or replaced after the optimizer was built: once per flush, since
        # walking the model's parameters every step would cost a deep model more than this
        if frozenset(id(p) for p in ctx.wb.model.parameters()) != self._model_ids:
            self._audit(ctx, "model_changed")
        self._report(ctx)

    def on_run_end(self, ctx: StepContext) -> None:
        self._report(ctx)

    def _report(self, ctx: StepContext) -> None:
        backwards = ctx.wb.n_backward
        if not backwards or not self._watched:
            return
        names = frozenset(self._watch)
        if names != self._reported:
            self._reported = names
            ctx.wb.writer.event(ctx.step, "coverage_grads", no_grad=sorted(names),
                                watched=self._watched, backwards=backwards)
