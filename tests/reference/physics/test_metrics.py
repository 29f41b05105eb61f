import math

import numpy as np
import pytest

from riswb.reference.physics.metrics import match_sources

SPAN = np.array([math.radians(120), math.radians(60), 5.0])
BOTH = np.ones((1, 2), bool)


def _pos(*rows):
    return np.array([rows], float)


def test_perfect_estimates_in_any_order_score_zero():
    t = _pos((0.1, 0.2, 3.0), (-0.5, 0.0, 5.0))
    m = match_sources(t, BOTH, t[:, ::-1], BOTH, SPAN)
    assert m.matched.all() and m.n_false == 0 and np.abs(m.errors).max() == 0


def test_hand_made_errors():
    t = _pos((0.0, 0.0, 3.0), (0.5, 0.1, 5.0))
    e = _pos((0.5 + math.radians(2), 0.1, 5.5), (math.radians(-4), 0.0, 3.0))
    m = match_sources(t, BOTH, e, BOTH, SPAN)
    assert m.errors[:, 0] == pytest.approx([math.radians(4), math.radians(2)])
    assert m.errors[:, 1] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert m.errors[:, 2] == pytest.approx([0.0, 0.5])


def test_a_miss_counts_at_full_span():
    t = _pos((0.0, 0.0, 3.0), (0.5, 0.1, 5.0))
    miss = _pos((0.0, 0.0, 3.0), (0.0, 0.0, 0.0))
    m = match_sources(t, BOTH, miss, np.array([[True, False]]), SPAN)
    assert m.matched.tolist() == [True, False]
    assert m.errors[1] == pytest.approx(SPAN)


def test_no_estimates_at_all_is_all_misses():
    t = _pos((0.0, 0.0, 3.0))
    m = match_sources(t, np.ones((1, 1), bool), t, np.zeros((1, 1), bool), SPAN)
    assert not m.matched.any() and m.errors[0] == pytest.approx(SPAN)


def test_false_alarms_are_counted():
    t = np.array([[(0.0, 0.0, 3.0), (0, 0, 0)]])
    e = np.array([[(0.0, 0.0, 3.0), (0.7, 0.2, 4.0)]])
    m = match_sources(t, np.array([[True, False]]), e, BOTH, SPAN)
    assert m.n_false == 1 and m.matched.tolist() == [True]
