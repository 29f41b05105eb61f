"""Which optimizer-step cycles the sampled probes observe (host-bound loops).

A probe whose records are statistics over the steps it saw (`Probe.sampled`: the raw
gradient norms, the dead-tensor windows, what the loop did between backward and step,
gradients flowing into inputs) need not see every step. On a loop whose step is mostly
host time — a tiny model, or any model on a GPU — their Python and kernel launches are a
large share of the step, so the Workbench lets them observe one optimizer-step cycle in
`stride` (a cycle: everything from one optimizer step's post-hook to the next, forwards,
losses and backwards included, so a probe sees whole cycles or none). Probes that count
events or must not miss one (cadence, non-finite counts, weight swaps, the loss trace)
see every step.

The stride comes from what the probes cost on this loop, measured, not guessed:

* the first `FRONT` cycles are all observed (a term dead or a tensor frozen at init is
  decided from the first steps, and short runs are observed whole);
* then a run of `CALIBRATE` observed cycles and one of as many unobserved. Runs, not
  cycles in turn: a loop with a period of its own (a GAN's generator and discriminator
  steps) would otherwise have one kind of its cycles timed observed and the other not.
  Each cycle's busy time (its first forward, or `wb.loss` call, to the end of its
  optimizer step's probe handlers; data loading, and the other loops' turns in an
  interleaved benchmark, are not the loop's step), the shortest of each run, gives the
  loop's own cycle u (unobserved, always-on probes included) and the sampled probes' cost
  c = observed − u, plus the sampled probes' flush time per cycle they observed (their
  records grow with those cycles; the Workbench times their flushes). The shortest,
  because a shared machine's load, a flush or a garbage collection only ever add time:
  the minimum of several cycles is the steadiest estimate of what a cycle needs;
* stride = ⌈c / (`SHARE`·u)⌉, between 1 and `MAX_STRIDE`: the sampled probes keep to about
  `SHARE` of the step (a loop whose probes are cheap against its step keeps stride 1);
* every `RECHECK` cycles the calibration is repeated, as a loop's step time drifts.

Observed cycles are spaced by gaps drawn uniformly from 1 … 2·stride − 1 (mean `stride`),
from a fixed seed: a loop with a period of its own (alternating optimizers, one backward per
head, accumulation) is observed at every phase of it, and a given stride always observes
the same cycles.
"""

from __future__ import annotations

import math
import random

FRONT = 64  # cycles observed unconditionally at the start of a run
CALIBRATE = 12  # cycles of each kind (observed, unobserved) per calibration
RECHECK = 1000  # cycles between calibrations
SHARE = 0.01  # the sampled probes' target share of a cycle
MAX_STRIDE = 16  # at least one cycle in sixteen is observed


class ObservationSchedule:
    """Decides, at the end of each cycle, whether the next one is observed."""

    def __init__(self, stride: int | None = None, *, seed: int = 0):
        """`stride`: a fixed stride (1 observes every cycle); None measures it."""
        if stride is not None and stride < 1:
            raise ValueError(f"observe_every must be >= 1, got {stride}")
        self.fixed = stride is not None
        self.stride = 1 if stride is None else int(stride)
        self.cycle = 0  # cycles ended so far
        # (observed, unobserved) shortest cycle seconds at the last calibration
        self.costs: tuple[float, float] | None = None
        self._random = random.Random(seed)
        self._calibration_start = FRONT
        self._times: dict[bool, list[float]] = {True: [], False: []}
        self._next_observed = 0
        # since the last decision: observed cycles, and the sampled probes' flush seconds
        self._observed = 0
        self._flushing = 0.0

    def _calibrating(self, cycle: int) -> bool:
        start = self._calibration_start
        return start <= cycle < start + 2 * CALIBRATE

    def end_cycle(self, busy: float | None, observed: bool) -> bool:
        """Close the current cycle (`busy` seconds long, None when unknown; observed or not);
        whether the next one is observed."""
        ended, self.cycle = self.cycle, self.cycle + 1
        if not self.fixed:
            self._measure(ended, busy, observed)
            if self.cycle < FRONT:
                return True
            if self._calibrating(self.cycle):
                return self.cycle - self._calibration_start < CALIBRATE
        if self.stride == 1:
            return True
        if self.cycle >= self._next_observed:
            self._next_observed = self.cycle + self._random.randint(1, 2 * self.stride - 1)
            return True
        return False

    def note_flush(self, seconds: float) -> None:
        """The sampled probes' share of a flush (their records of the observed cycles)."""
        self._flushing += seconds

    def _measure(self, ended: int, busy: float | None, observed: bool) -> None:
        self._observed += observed
        if self._calibrating(ended) and busy is not None:
            self._times[observed].append(busy)
        if self.cycle == self._calibration_start + 2 * CALIBRATE:
            self._decide()

    def _decide(self) -> None:
        observed, plain = self._times[True], self._times[False]
        self._times = {True: [], False: []}
        self._calibration_start += RECHECK
        if not observed or not plain:
            return
        flushing = self._flushing / self._observed if self._observed else 0.0
        self._observed, self._flushing = 0, 0.0
        with_probes, without = min(observed) + flushing, min(plain)
        self.costs = (with_probes, without)
        cost = max(with_probes - without, 0.0)
        needed = math.ceil(cost / (SHARE * without)) if without > 0 else MAX_STRIDE
        self.stride = min(max(needed, 1), MAX_STRIDE)
        self._next_observed = self.cycle
