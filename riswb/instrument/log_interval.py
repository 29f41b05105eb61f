"""How many `wb.loss` calls one record covers (the probes' flush interval).

`Workbench(log_every=N)` flushes every N calls, exactly. Left at its default, the interval
is `DEFAULT_LOG_EVERY` (20) calls, and after the first `FRONT` calls it never covers less
than `MIN_SECONDS` of the loop's own busy time: a flush turns every probe's accumulators
into records (about a millisecond for the default probes on a CPU, whatever the interval
holds), which on a loop whose step is well under a millisecond would cost more than the
probes themselves and write hundreds of records a second. The interval then grows to a
multiple of 20 calls (at most `MAX_FACTOR`), from the busy time per call the Workbench
measures (`wb.cycle_busy` / `wb.cycle_losses`, smoothed; it moves only when the wanted
multiple is half a step past the current one and the change exceeds a quarter of the
interval, so that a loop near a boundary does not make it flap); the early records, which
short runs and the first findings rely on, keep the plain cadence.
"""

from __future__ import annotations

import math

DEFAULT_LOG_EVERY = 20
FRONT = 200  # calls logged at the plain cadence before the interval may grow
MIN_SECONDS = 0.1  # of the loop's busy time per record, once past FRONT
MAX_FACTOR = 25  # the interval stays within 25 × DEFAULT_LOG_EVERY calls
_SMOOTHING = 0.1  # weight of the newest cycle in the busy-time average


class LogInterval:
    """The current flush interval, fixed or grown from the loop's measured busy time."""

    def __init__(self, log_every: int | None):
        if log_every is not None and log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.fixed = log_every is not None
        self.base = DEFAULT_LOG_EVERY if log_every is None else int(log_every)
        self.every = self.base
        self._per_call: float | None = None  # smoothed busy seconds per wb.loss call

    @property
    def busy_per_call(self) -> float | None:
        """The loop's busy seconds per `wb.loss` call, smoothed over its cycles (None before
        the first one ends): what budget-driven probes weigh a sample's cost against."""
        return self._per_call

    def note_cycle(self, busy: float | None, losses: int) -> None:
        """One optimizer-step cycle's busy time and its `wb.loss` calls."""
        if busy is None or not losses:
            return
        per_call = busy / losses
        self._per_call = per_call if self._per_call is None else (
            (1 - _SMOOTHING) * self._per_call + _SMOOTHING * per_call)

    def settled(self, calls: int) -> bool:
        """Whether the interval can no longer change by itself: fixed, past `FRONT` calls, or
        a loop slow enough that `base` calls already hold `MIN_SECONDS`."""
        return (self.fixed or calls >= FRONT
                or (self._per_call is not None and self.base * self._per_call >= MIN_SECONDS))

    def update(self, calls: int) -> bool:
        """After a flush at `calls` wb.loss calls: set the next interval; whether it changed."""
        if self.fixed or calls < FRONT or not self._per_call:
            return False
        wanted = MIN_SECONDS / (self.base * self._per_call)  # intervals of `base` calls
        factor = self.every // self.base
        # half a factor of hysteresis each way, and a quarter of the interval: a loop near a
        # boundary, or timer noise, must not make the interval flap
        if math.ceil(wanted - 0.5) > factor:
            new = math.ceil(wanted - 0.5)
        elif math.ceil(wanted + 0.5) < factor:
            new = math.ceil(wanted + 0.5)
        else:
            return False
        every = self.base * min(max(new, 1), MAX_FACTOR)
        if abs(every - self.every) * 4 <= self.every:
            return False
        self.every = every
        return True
