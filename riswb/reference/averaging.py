"""Weight averaging (EMA, SWA) with a swap for evaluation that always restores.

The original project validated on EMA weights swapped in by hand and never swapped back,
and "evaluated on SWA weights" through a load that silently changed nothing
(docs/failures.md #19-20). Here the swap is a context manager: the training weights come back
bit for bit in a `finally`, and the swap announces itself (`weights_swap_in/out` events)
so the weight-swap probe can check that it changed the weights and that they returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from riswb.instrument.hooks import Event


class WeightAverage:
    """EMA (shadow ← decay·shadow + (1−decay)·θ) or SWA (running mean of θ)."""

    def __init__(self, params: list[torch.nn.Parameter], *, kind: str = "ema",
                 decay: float = 0.99):
        if kind not in ("ema", "swa"):
            raise ValueError(f"weight average kind must be 'ema' or 'swa', got {kind!r}")
        if kind == "ema" and not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.kind = kind
        self.decay = decay
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        self.count += 1
        weight = 1.0 / self.count if self.kind == "swa" else 1.0 - self.decay
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], weight)

    @contextmanager
    def swapped_in(self, emit: Callable[..., None] | None = None) -> Iterator[None]:
        """Evaluate on the averaged weights; the training weights are restored on exit."""
        backup = [p.detach().clone() for p in self.params]
        try:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], self.shadow)
            if emit is not None:  # inside the try: a failing listener still restores
                emit(Event.WEIGHTS_SWAP_IN, kind=self.kind)
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], backup)
            if emit is not None:
                emit(Event.WEIGHTS_SWAP_OUT, kind=self.kind)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "decay": self.decay, "count": self.count,
                "shadow": [t.clone() for t in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]
        stored = [t.to(s.device) for t, s in zip(state["shadow"], self.shadow, strict=True)]
        torch._foreach_copy_(self.shadow, stored)
