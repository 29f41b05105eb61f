"""The weighted loss `wb.loss` returns, and the record of which weights were actually used.

docs/failures.md #8: a main weight that was never passed and defaulted to 0 trained nothing
for days. The `loss_weight` record shows the weights really used: written at the first
call and whenever a weight changes (tensor weights are compared at flush, where reading a
device tensor is allowed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from riswb.runlog import RunWriter

RESERVED_TERMS = frozenset({"total", "step", "kind"})
RESERVED_METRICS = frozenset({"step", "kind", "time"})


def checked_terms(
    terms: Mapping[str, Any], device: torch.device
) -> tuple[dict[str, torch.Tensor], frozenset[str]]:
    """(the terms as scalar tensors, the names of constant ones) — or a ValueError that names
    the term. A Python number is a constant term: recorded, with no gradient to check; a
    tensor must hold one element (a batch of losses averaged in silence hides a bug)."""
    if not isinstance(terms, Mapping) or not terms:
        raise ValueError("wb.loss takes a non-empty dict of named scalar terms")
    clash = RESERVED_TERMS.intersection(terms)
    if clash:
        raise ValueError(f"loss term names {sorted(clash)} are reserved")
    out: dict[str, torch.Tensor] = {}
    constants = []
    for name, term in terms.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"loss term names must be non-empty strings, got {name!r}")
        if isinstance(term, torch.Tensor):
            if term.dim() == 0:  # the usual term: one C call
                out[name] = term
                continue
            if term.numel() != 1:
                raise ValueError(f"loss term {name!r} has shape {tuple(term.shape)}: wb.loss "
                                 "takes scalars (reduce it first, e.g. .mean())")
            out[name] = term.reshape(())
        elif isinstance(term, (int, float)) and not isinstance(term, bool):
            out[name] = torch.tensor(float(term), device=device)
            constants.append(name)
        else:
            raise ValueError(f"loss term {name!r} is a {type(term).__name__}: wb.loss takes "
                             "scalar tensors or Python numbers")
    return out, frozenset(constants)


def checked_metrics(metrics: Mapping[str, Any]) -> Mapping[str, Any]:
    """`metrics` for `wb.evaluate`, refusing keys that would forge the record itself."""
    if not isinstance(metrics, Mapping):
        raise ValueError("wb.evaluate takes a dict of named metrics")
    clash = RESERVED_METRICS.intersection(metrics)
    if clash:
        raise ValueError(f"metric names {sorted(clash)} are reserved")
    return metrics


def weighted_sum(terms: Mapping[str, torch.Tensor], weights: Mapping[str, Any]) -> torch.Tensor:
    """Σ weight·term over `terms`, a missing weight counting as 1 (the graph stays intact)."""
    total = None
    for name, term in terms.items():
        weight = weights.get(name, 1.0)
        part = term if (not isinstance(weight, torch.Tensor) and weight == 1.0) else term * weight
        total = part if total is None else total + part
    if total is None:
        raise ValueError("a weighted sum needs at least one term")
    return total


def _as_float(weight: Any) -> float:
    if isinstance(weight, torch.Tensor):
        return float(weight.detach().float().mean())
    return float(weight)


class LossWeights:
    """Weights the loop used, per term, and the weighted sum of one `wb.loss` call."""

    def __init__(self, writer: RunWriter):
        self.writer = writer
        self.terms: list[str] = []
        self.used: dict[str, Any] = {}
        self._written: dict[str, float] | None = None
        self._noted: dict[str, Any] | None = None  # the latest call's weights, if all numbers

    def total(
        self, names: tuple[str, ...], terms: Mapping[str, torch.Tensor], used: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Σ w·term, detached float32 [terms…, total] or None when the terms do not stack).

        The sum is the one a loop writes itself (`weighted_sum`: the same ops, in the same
        order, so the same graph and rounding as without riswb); the values vector the
        probes read is one stack taken outside autograd."""
        total = weighted_sum(terms, used)
        if total.dim():  # a (1,)-shaped tensor weight broadcast the scalar terms
            total = total.reshape(())
        enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)  # the context manager costs more than the stack
        try:
            values = torch.stack([*(terms[n] for n in names), total])
        except RuntimeError:  # terms on several devices
            return total, None
        finally:
            torch._C._set_grad_enabled(enabled)
        return total, (values if values.dtype is torch.float32 else values.float())

    def note(self, step: int, names: tuple[str, ...], used: dict[str, Any]) -> None:
        """Record the terms and weights of one call (new names go to the manifest)."""
        if used == self._noted:  # the usual call: the same Python-number weights again
            return
        tensors = any(isinstance(w, torch.Tensor) for w in used.values())
        self._noted = None if tensors else used
        if any(n not in self.used for n in names):
            self.terms = list(dict.fromkeys([*self.terms, *names]))
            self.writer.update_manifest(loss_terms=self.terms)
        self.used.update(used)
        if tensors:
            return  # compared at flush
        if self._written is None or any(
            self._written.get(n) != float(w) for n, w in used.items()
        ):
            self._write(step)

    def flush(self, step: int) -> None:
        if any(isinstance(w, torch.Tensor) for w in self.used.values()):
            self._write(step)

    def _write(self, step: int) -> None:
        current = {n: _as_float(w) for n, w in self.used.items()}
        if current != self._written:
            self._written = current
            self.writer.scalars(step, "loss_weight", current)
