"""How the probe-overhead benchmark (riswb.bench) charges work a run does only now and then.

A benchmark window of a few hundred steps cannot hold a run's sampled work at its true
share: the term-gradient probe samples one step in N (N ≈ 100–1000) plus twelve front-loaded
steps, and the sampled probes' cycles are observed in full at the start of a run and
during each calibration (riswb.instrument.observation). Each is measured and spread over
the steps it really covers.
"""

from __future__ import annotations

from typing import Any

from riswb.instrument import observation
from riswb.instrument.workbench import Workbench


def calibration_share(wb: Workbench | None, run_length: int) -> float:
    """Seconds per step that a run spends observing cycles in full beyond its stride: the
    `FRONT` first and each calibration's observed half (once, then every `RECHECK` cycles),
    at the sampled probes' measured cost per observed cycle."""
    schedule = wb.observation if wb is not None else None
    if schedule is None or schedule.costs is None or schedule.stride == 1:
        return 0.0
    cost = max(schedule.costs[0] - schedule.costs[1], 0.0)
    extra_cycles = ((observation.FRONT + observation.CALIBRATE) / run_length
                    + observation.CALIBRATE / observation.RECHECK)
    return cost * extra_cycles * (1 - 1 / schedule.stride)


class StepTimes:
    """One variant's timed turns (of one or more steps), split by whether a turn held
    term-gradient samples (front-loaded turns of an accelerator can hold several)."""

    def __init__(self) -> None:
        self.other = self.sampled = 0.0
        self.other_steps = self.sampled_steps = self.samples = 0

    def add(self, seconds: float, samples: int, steps: int = 1) -> None:
        if samples:
            self.sampled += seconds
            self.sampled_steps += steps
            self.samples += int(samples)
        else:
            self.other += seconds
            self.other_steps += steps

    def ordinary(self) -> float:
        """Mean seconds of a step without a sample."""
        if not self.other_steps:
            return self.sampled / max(self.sampled_steps, 1)
        return self.other / self.other_steps

    def extra(self) -> float:
        """A sample's mean extra seconds: sampled turns' time less `ordinary()` per step."""
        if not self.samples or not self.other_steps:
            return 0.0
        return (self.sampled - self.ordinary() * self.sampled_steps) / self.samples

    def amortized(self, interval: int | None) -> float:
        """Seconds per step when one step in `interval` samples (None: never): m + e/interval,
        with m the mean ordinary step and e a sample's extra time — exactly Σt/n when the
        window holds one sample per `interval` steps."""
        return self.ordinary() + (self.extra() / interval if interval else 0.0)


def term_samples(probe: Any, wb: Workbench | None, turn: int) -> int:
    """Term-gradient samples the next `turn` steps will take, by the probe's own schedule
    (front-loaded steps and every interval-th; the first step seen is front-loaded)."""
    if probe is None:
        return 0
    first = wb.next_step
    return sum(probe._origin is None and k == 0 or probe._origin is not None
               and probe._due(first + k) for k in range(turn))


def pin_term_sampling(probe: Any, steps: int, turn: int) -> tuple[int, int] | None:
    """(interval used while timing, interval the probe chose) for a variant whose
    term-gradient probe has settled on one, else None. An interval longer than a round is
    pinned to the round length (every round then times one sample, whose extra cost is
    amortized over the real interval); a shorter one is left alone; never under two turns,
    so that ordinary turns are timed too."""
    chosen = getattr(probe, "interval", None)
    if not chosen:
        return None
    used = max(min(int(chosen), steps), 2 * turn)
    probe.interval = used
    return used, int(chosen)
