"""Alternating blocks (riswb/bench_blocks.py) on a simulated clock: exact ratios."""

import pytest

from riswb.bench_blocks import block_ratio


def test_blocks_alternate_and_the_ratio_is_the_median_of_the_pairs():
    now, calls = [0.0], []
    # per-step seconds of each round's block: the machine slows down in the last round
    plain_costs, probed_costs = iter([1.0, 1.0, 2.0]), iter([1.5, 1.2, 2.2])

    def loop(name, costs):
        def step():  # one step per block (steps=1)
            calls.append(name)
            now[0] += next(costs)
        return step

    timed = block_ratio(loop("plain", plain_costs), loop("probed", probed_costs), steps=1,
                        rounds=3, timer=lambda: now[0])
    assert calls == ["plain", "probed"] * 3
    assert timed.ratio == pytest.approx(1.2)  # pairs 1.5, 1.2, 1.1: the slow round cancels
    assert timed.plain_ms == pytest.approx(1e3 * 1.0) and timed.probed_ms == pytest.approx(1.5e3)


def test_bad_block_sizes_are_refused():
    with pytest.raises(ValueError, match="blocks need"):
        block_ratio(lambda: None, lambda: None, steps=0, rounds=1, timer=lambda: 0.0)
