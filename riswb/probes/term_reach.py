"""Did the loop's backward go through each loss term? (event `term_reach`)

`wb.loss` returns the weighted total, but nothing makes the loop backpropagate it: a loop
that calls `ce.backward()` on one term (the total built, then a stale variable used) trains
the other terms' heads never, and every gradient probe at `wb.loss` time — which
differentiates the terms itself — sees them alive. On the steps TermGradientsProbe samples,
each term tensor gets a tensor hook that notes the autograd graph task it fires in; the
Workbench notes the task of every real backward (`wb.backward_task`: a `.backward()` that
accumulated into parameters, not a probe's `torch.autograd.grad`). At the optimizer step
that closes the cycle, a term is reached when its hook fired in one of the cycle's real
backwards — whatever tensor the loop called backward on, the total, its own sum of the
terms, or one backward per term. A cycle without any backward (a loss only logged) is not
counted, nor one where another `wb.loss` call came before the first backward (losses dropped
— one step per epoch, step-cadence's business — or summed and backpropagated together).

Event `term_reach` {`checked`: {term: cycles checked}, `missed`: {term: cycles whose
backwards did not go through it}, `first_step`} at a flush, when the set of missed terms
changed or the checks doubled since the last one (the last event holds current counts).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch


class TermReach:
    """Per-term tensor hooks on chosen `wb.loss` calls, resolved at the optimizer step."""

    def __init__(self):
        self.checked: dict[str, int] = {}
        self.missed: dict[str, int] = {}
        self._first: int | None = None
        self._reported: dict[str, int] = {}
        self._reported_checks = 0
        self._handles: list[Any] = []
        self._fired: dict[str, set[int]] = {}  # term -> graph tasks its hook fired in
        self._backwards: set[int] = set()  # real backward tasks of the current cycle
        self._superseded = False  # a later wb.loss came before any backward (`note_loss`)
        self._step = 0

    def watch(self, terms: dict[str, Any], step: int) -> None:
        """Hook the gradient-carrying term tensors of one `wb.loss` call."""
        for name, term in terms.items():
            if isinstance(term, torch.Tensor) and term.requires_grad and name not in self._fired:
                self._fired[name] = set()
                self._handles.append(term.register_hook(partial(self._on_grad, name)))
        self._step = step

    def note_loss(self) -> None:
        """Another `wb.loss` call: if none of the watched terms' cycle has had a backward
        yet, the watched call was superseded — its losses dropped (one step per epoch,
        step-cadence's business) or summed with later ones — and says nothing here."""
        if self._fired and not self._backwards:
            self._superseded = True

    def _on_grad(self, name: str, _grad: torch.Tensor) -> None:
        self._fired[name].add(torch._C._current_graph_task_id())

    def on_backward(self, task: int | None) -> None:
        if self._fired and task is not None:
            self._backwards.add(task)

    def on_step(self) -> None:
        """Close the cycle: count each watched term as reached or missed."""
        if not self._fired:
            return
        if self._backwards and not self._superseded:
            for name, tasks in self._fired.items():
                self.checked[name] = self.checked.get(name, 0) + 1
                if not tasks & self._backwards:
                    self.missed[name] = self.missed.get(name, 0) + 1
                    if self._first is None:
                        self._first = self._step
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._fired.clear()
        self._backwards.clear()
        self._superseded = False

    def flush(self, writer: Any, step: int) -> None:
        """An event when the set of missed terms changed, or the checks doubled since the
        last one (counts kept current at log-spaced steps: a handful of events per run)."""
        checked = sum(self.checked.values())
        if self.missed and (set(self.missed) != set(self._reported)
                            or checked >= 2 * self._reported_checks):
            self._reported, self._reported_checks = dict(self.missed), checked
            writer.event(step, "term_reach", checked=dict(self.checked),
                         missed=dict(self.missed), first_step=self._first)
