"""How the benchmark charges sampled work: amortized term samples, observation calibration."""

from types import SimpleNamespace

import pytest

from riswb.bench_sampling import StepTimes, calibration_share
from riswb.instrument.observation import CALIBRATE, FRONT, RECHECK, ObservationSchedule


def test_amortized_step_equals_the_plain_mean_over_whole_intervals():
    """Oracle: a window holding one sample per N steps has mean Σt/n; the amortized mean
    must give exactly that, and give the same for a window cut short (one sample in 5)."""
    times = [1.0] * 9 + [11.0]  # N = 10: nine ordinary steps, one sampled
    whole = StepTimes()
    for i, t in enumerate(times * 3):
        whole.add(t, i % 10 == 9)
    assert whole.amortized(10) == pytest.approx(sum(times) / len(times))
    short = StepTimes()
    for i, t in enumerate([1.0] * 4 + [11.0]):  # pinned to 5: the sample weighs 1/10 still
        short.add(t, i == 4)
    assert short.amortized(10) == pytest.approx(2.0)
    turns = StepTimes()  # accelerator turns of 10 steps: 1 s per step, a sample costs 10 s
    for k in range(4):
        turns.add(20.0 if k == 0 else 10.0, k == 0, 10)
    assert turns.amortized(100) == pytest.approx(1.1)
    empty = StepTimes()
    empty.add(3.0, False)
    assert empty.amortized(10) == 3.0


def test_calibration_share_charges_the_fully_observed_cycles_beyond_the_stride():
    """Closed form: c·((FRONT + CALIBRATE)/L + CALIBRATE/RECHECK)·(1 − 1/stride) per step,
    c the sampled probes' cost per observed cycle; nothing at stride 1."""
    schedule = ObservationSchedule()
    schedule.stride, schedule.costs = 4, (1.5e-3, 1.0e-3)
    bench = SimpleNamespace(observation=schedule)
    expected = 0.5e-3 * ((FRONT + CALIBRATE) / 10_000 + CALIBRATE / RECHECK) * 0.75
    assert calibration_share(bench, 10_000) == pytest.approx(expected)
    schedule.stride = 1
    assert calibration_share(bench, 10_000) == 0.0
    assert calibration_share(None, 10_000) == 0.0
