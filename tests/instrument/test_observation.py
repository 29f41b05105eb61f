"""The observation schedule: which optimizer-step cycles reach the sampled probes."""

from __future__ import annotations

import time

import pytest
import torch

from riswb.instrument.hooks import Probe
from riswb.instrument.observation import (
    CALIBRATE,
    FRONT,
    MAX_STRIDE,
    RECHECK,
    SHARE,
    ObservationSchedule,
)
from riswb.instrument.workbench import Workbench
from riswb.runlog import read_run
from tests.instrument.linear_loop import train_linear


def _drive(schedule: ObservationSchedule, cycles: int, observed_s: float,
           unobserved_s: float) -> list[bool]:
    """Run `cycles` cycles on a simulated clock: an observed cycle lasts `observed_s`."""
    observing, seen = True, []
    for _ in range(cycles):
        seen.append(observing)
        observing = schedule.end_cycle(observed_s if observing else unobserved_s, observing)
    return seen


def test_front_cycles_and_calibration_window():
    schedule = ObservationSchedule()
    seen = _drive(schedule, FRONT + 2 * CALIBRATE, 2e-3, 1e-3)
    assert all(seen[:FRONT])
    # a run of each kind: both timed, and each run holds every phase of a loop's own period
    assert seen[FRONT:] == [True] * CALIBRATE + [False] * CALIBRATE


def test_a_loop_with_a_period_of_its_own_is_not_mistaken_for_probe_cost():
    """Alternating generator and discriminator cycles (3 ms, 1 ms) and free probes: timing
    observed and unobserved cycles in turn would have compared the two kinds of cycle."""
    schedule, observing = ObservationSchedule(), True
    for cycle in range(FRONT + 2 * CALIBRATE + 1):
        observing = schedule.end_cycle(3e-3 if cycle % 2 else 1e-3, observing)
    assert schedule.stride == 1


@pytest.mark.parametrize(("observed", "unobserved", "expected"), [
    (1.0e-3, 1.0e-3, 1),  # the sampled probes cost nothing measurable
    (1.0e-3 + 0.5 * SHARE * 1e-3, 1.0e-3, 1),  # half their share
    (1.0e-3 + 3.5 * SHARE * 1e-3, 1.0e-3, 4),  # 3.5 shares: every 4th cycle
    (5e-3, 1e-3, MAX_STRIDE),  # far beyond: capped, one cycle in MAX_STRIDE still seen
])
def test_stride_keeps_the_sampled_probes_to_their_share(observed, unobserved, expected):
    schedule = ObservationSchedule()
    _drive(schedule, FRONT + 2 * CALIBRATE + 1, observed, unobserved)
    assert schedule.stride == expected
    assert schedule.costs == pytest.approx((observed, unobserved))


def test_observed_fraction_follows_the_stride_and_every_phase_is_seen():
    schedule = ObservationSchedule(4)
    seen = _drive(schedule, 4000, 1e-3, 1e-3)
    assert sum(seen) / len(seen) == pytest.approx(1 / 4, abs=0.03)
    # a loop with a period of its own (alternating optimizers, accumulation ×4): every
    # phase is observed, about equally often
    for period in (2, 3, 4, 8):
        phases = [sum(seen[i::period]) for i in range(period)]
        assert min(phases) > 0.6 * max(phases), (period, phases)


def test_fixed_stride_one_observes_everything_and_recalibration_follows_drift():
    assert all(_drive(ObservationSchedule(1), 500, 9e-3, 1e-3))
    schedule = ObservationSchedule()
    _drive(schedule, FRONT + 2 * CALIBRATE + 1, 5e-3, 1e-3)
    assert schedule.stride == MAX_STRIDE
    # the loop's own step got much slower (a bigger batch): the next calibration relaxes
    _drive(schedule, RECHECK, 100.5e-3, 100e-3)
    assert schedule.stride == 1


def test_a_bad_fixed_stride_is_refused():
    with pytest.raises(ValueError, match="observe_every"):
        ObservationSchedule(0)


class _Counting(Probe):
    """Records the optimizer step of every backward end and step it sees."""

    def __init__(self, name: str, sampled: bool, delay: float = 0.0):
        self.name = name
        self.sampled = sampled
        self.delay = delay
        super().__init__()
        self.backwards: list[int] = []
        self.steps: list[int] = []

    def on_after_backward(self, ctx):
        self.backwards.append(ctx.wb.opt_step + 1)
        if self.delay:
            time.sleep(self.delay)

    def on_before_optimizer_step(self, ctx):
        self.steps.append(ctx.payload["opt_step"])


def _train(steps: int, probes: list[Probe], tmp_path, **options) -> Workbench:
    return train_linear(steps, tmp_path, "obs", probes=probes, **options)


def test_sampled_probes_see_whole_cycles_and_the_others_see_every_step(tmp_path):
    sampled, always = _Counting("sampled", True), _Counting("always", False)
    _train(400, [sampled, always], tmp_path, observe_every=4)
    assert always.steps == list(range(1, 401))
    assert 60 < len(sampled.steps) < 140
    assert sampled.backwards == sampled.steps  # a backward and its step, or neither


def test_a_costly_sampled_probe_is_strided_and_the_run_says_so(tmp_path):
    """A sampled probe that takes 2 ms on a sub-millisecond step: the Workbench measures
    it and observes one cycle in MAX_STRIDE; the event names the stride and the costs."""
    slow = _Counting("slow", True, delay=2e-3)
    wb = _train(FRONT + 2 * CALIBRATE + 200, [slow], tmp_path)
    assert wb.observation.stride == MAX_STRIDE
    assert len(slow.backwards) < FRONT + CALIBRATE + 200 / MAX_STRIDE * 2
    events = read_run(wb.path).events
    noted = events[events.event == "observation_stride"]
    assert len(noted) == 1
    row = noted.iloc[0]
    assert row["stride"] == MAX_STRIDE and row["cycle"] == FRONT + 2 * CALIBRATE
    assert row["observed_ms"] > row["unobserved_ms"] + 1.5


def test_cheap_probes_keep_every_cycle(tmp_path):
    cheap = _Counting("cheap", True)
    wb = _train(FRONT + 2 * CALIBRATE + 100, [cheap], tmp_path)
    # a probe that costs nothing is not strided to the cap (timer noise on a shared
    # machine can read a few percent of the step as its cost)
    assert wb.observation.stride < MAX_STRIDE


def test_cycle_busy_time_leaves_out_what_happens_between_steps(tmp_path):
    """The loop's own busy time runs from a cycle's first forward to its step's end: data
    loading (here a 20 ms sleep before each forward) is not part of it."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    wb = Workbench(model, optimizer, runs_dir=tmp_path, name="busy", probes=[])
    x = torch.randn(8, 4)
    busy = []
    for _ in range(5):
        time.sleep(0.02)  # "data loading"
        loss = wb.loss({"a": model(x).square().mean(), "b": model(x).abs().mean()})
        loss = loss + wb.loss({"a": model(x).square().mean()})  # two calls, one step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        busy.append(wb.cycle_busy)
        assert wb.cycle_losses == 2
    wb.close()
    assert all(0 < b < 0.015 for b in busy), busy


def test_the_sampled_probes_flush_time_counts_toward_their_share():
    """Cycles no slower observed, but the flushes of what they observed take 3.5 shares
    of a cycle per observed cycle: every 4th cycle, as if the cycles themselves cost it."""
    schedule, observing = ObservationSchedule(), True
    for cycle in range(FRONT + 2 * CALIBRATE + 1):
        if cycle % 20 == 19:  # a flush every 20 cycles, all of them observed until now
            schedule.note_flush(20 * 3.5 * SHARE * 1e-3)
        observing = schedule.end_cycle(1e-3, observing)
    assert schedule.stride == 4
