"""The flush interval: exact when given, grown from the loop's busy time when not."""

from __future__ import annotations

import pytest

from riswb.instrument.log_interval import (
    DEFAULT_LOG_EVERY,
    FRONT,
    MAX_FACTOR,
    MIN_SECONDS,
    LogInterval,
)
from riswb.runlog import read_run
from tests.instrument.linear_loop import train_linear


def test_a_given_interval_is_kept_whatever_the_step_costs():
    interval = LogInterval(5)
    for _ in range(50):
        interval.note_cycle(1e-5, 1)
    assert not interval.update(10 * FRONT) and interval.every == 5


@pytest.mark.parametrize(("per_call", "factor"), [
    (5e-3, 1),  # 20 calls already hold 100 ms
    (MIN_SECONDS / DEFAULT_LOG_EVERY / 4.7, 5),  # 20 calls hold a 4.7th of MIN_SECONDS
    (1e-7, MAX_FACTOR),  # capped
])
def test_the_default_grows_to_hold_min_seconds_of_busy_time(per_call, factor):
    interval = LogInterval(None)
    for _ in range(100):
        interval.note_cycle(2 * per_call, 2)  # two wb.loss calls per cycle
    assert not interval.update(FRONT - 1) and interval.every == DEFAULT_LOG_EVERY
    assert interval.update(FRONT) == (factor != 1)
    assert interval.every == DEFAULT_LOG_EVERY * factor


def test_a_loop_near_a_boundary_does_not_make_the_interval_flap():
    """Busy time per call wandering across the 1× / 2× boundary (wanted multiple 1.2–1.8)
    moves the interval once, to 2×, and never back and forth."""
    interval, changes = LogInterval(None), 0
    for k in range(4000):
        wanted = 1.2 + 0.6 * (k // 50 % 2)  # 50 cycles at 1.2, 50 at 1.8, ...
        interval.note_cycle(MIN_SECONDS / (DEFAULT_LOG_EVERY * wanted), 1)
        if k % 20 == 0:
            changes += interval.update(FRONT + k)
    assert changes == 1 and interval.every == 2 * DEFAULT_LOG_EVERY


def test_a_bad_interval_is_refused():
    with pytest.raises(ValueError, match="log_every"):
        LogInterval(0)


def test_a_sub_millisecond_loop_logs_every_20_calls_first_then_sparser(tmp_path):
    wb = train_linear(FRONT + 1600, tmp_path / "auto")
    run = read_run(wb.path)
    steps = run.scalars[run.scalars.kind == "loss"]["step"].tolist()
    early = [s for s in steps if s < FRONT]
    assert early == list(range(DEFAULT_LOG_EVERY - 1, FRONT, DEFAULT_LOG_EVERY))
    gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    late = [gap for a, gap in zip(steps, gaps, strict=False) if a >= FRONT + DEFAULT_LOG_EVERY]
    late = late[:-1]
    assert late and min(late) > DEFAULT_LOG_EVERY  # the final flush at close aside
    changed = run.events[run.events.event == "log_interval"]
    assert changed["every"].iloc[-1] == wb.log_interval.every > DEFAULT_LOG_EVERY
    fixed = read_run(train_linear(FRONT + 200, tmp_path / "fixed", log_every=20).path)
    steps = fixed.scalars[fixed.scalars.kind == "loss"]["step"].tolist()
    assert steps == list(range(19, FRONT + 200, 20))
