"""A warning when one probe costs more than its share of a training step.

A probe that takes a second per call slows training many times over, and nothing else
would say so. One `wb.loss` step in `EVERY` is timed probe by probe (at `OFFSET`, off the
steps probes sample on; the other steps pay one attribute read per event); a probe whose
calls take more than `SHARE` of that step's wall time, and at least `MIN_SECONDS`, on two
timed steps in a row (a one-off sample step is not a habit) is named once, in a Python
warning and in the manifest's `warnings`.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable

EVERY = 50  # time one step in this many
# ... the one at this offset: not a multiple of 5, while probes sample on steps ≡ 0 modulo
# "nice" intervals (10, 20, 50, 100, …): timing those would read a probe's amortized sample
# as its cost on every timed step; the first steps, paying one-off warm-up, come before it
OFFSET = 17
SHARE = 0.25  # of the timed step's wall time
MIN_SECONDS = 1e-3  # below this a probe is never worth a warning


class ProbeCostWatch:
    """Times the probes on sampled steps and warns about one that dominates its step."""

    def __init__(self, record: Callable[[str], None]):
        self.active = False  # read by the Registry on every event: keep it a plain bool
        self._record = record
        self._start = 0.0
        self._spent: defaultdict[str, float] = defaultdict(float)
        self._strikes: Counter[str] = Counter()
        self.warned: set[str] = set()

    def on_loss(self, n_loss: int) -> None:
        """Called at each `wb.loss`, before the step it opens: closes a timed step, and
        decides whether the step now starting is timed."""
        if self.active:
            self._judge(time.perf_counter() - self._start)
        self.active = n_loss % EVERY == OFFSET
        if self.active:
            self._spent.clear()
            self._start = time.perf_counter()

    def add(self, probe: str, seconds: float) -> None:
        self._spent[probe] += seconds

    def _judge(self, step_seconds: float) -> None:
        for probe, spent in self._spent.items():
            heavy = spent > max(SHARE * step_seconds, MIN_SECONDS)
            self._strikes[probe] = self._strikes[probe] + 1 if heavy else 0
            if self._strikes[probe] >= 2 and probe not in self.warned:
                self.warned.add(probe)
                share = spent / step_seconds
                message = (f"probe {probe} took {spent * 1e3:.1f} ms of a "
                           f"{step_seconds * 1e3:.1f} ms training step ({share:.0%}): it slows "
                           "training; leave it out of probes= or make it sample less")
                warnings.warn(f"riswb: {message}", RuntimeWarning, stacklevel=2)
                self._record(message)
