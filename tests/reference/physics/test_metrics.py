import math

import numpy as np
import pytest
import torch

from riswb.reference.physics.metrics import k_accuracy, localization_summary, match_sources

SPAN = np.array([math.radians(120), math.radians(60), 5.0])


def _pos(*rows):
    return np.array([rows], float)


def test_perfect_estimates_in_any_order_score_zero():
    t = _pos((0.1, 0.2, 3.0), (-0.5, 0.0, 5.0))
    e = t[:, ::-1]
    s = localization_summary(match_sources(t, np.ones((1, 2), bool), e, np.ones((1, 2), bool),
                                           SPAN))
    assert s["rmse"] == {"phi_deg": 0.0, "theta_deg": 0.0, "r_m": 0.0}
    assert s["n_missed"] == 0 and s["n_false"] == 0


def test_hand_made_errors():
    t = _pos((0.0, 0.0, 3.0), (0.5, 0.1, 5.0))
    e = _pos((0.5 + math.radians(2), 0.1, 5.5), (math.radians(-4), 0.0, 3.0))
    s = localization_summary(match_sources(t, np.ones((1, 2), bool), e, np.ones((1, 2), bool),
                                           SPAN))
    assert s["rmse"]["phi_deg"] == pytest.approx(math.sqrt((16 + 4) / 2))
    assert s["rmse"]["theta_deg"] == pytest.approx(0.0, abs=1e-12)
    assert s["rmse"]["r_m"] == pytest.approx(math.sqrt(0.25 / 2))


def test_a_miss_counts_at_full_span_and_never_helps():
    t = _pos((0.0, 0.0, 3.0), (0.5, 0.1, 5.0))
    good = _pos((0.0, 0.0, 3.0), (0.9, -0.4, 7.0))  # second estimate is awful but present
    miss = _pos((0.0, 0.0, 3.0), (0.0, 0.0, 0.0))
    both = np.ones((1, 2), bool)
    s_bad = localization_summary(match_sources(t, both, good, both, SPAN))
    s_miss = localization_summary(match_sources(t, both, miss, np.array([[True, False]]), SPAN))
    assert s_miss["n_missed"] == 1
    assert s_miss["rmse"]["phi_deg"] == pytest.approx(120 / math.sqrt(2))
    assert s_miss["rmse"]["r_m"] == pytest.approx(5.0 / math.sqrt(2))
    for key in ("phi_deg", "theta_deg", "r_m"):
        assert s_miss["rmse"][key] > s_bad["rmse"][key]
    assert s_miss["rmse_matched"]["phi_deg"] == 0.0


def test_no_estimates_at_all_is_all_misses_not_zero():
    t = _pos((0.0, 0.0, 3.0))
    s = localization_summary(match_sources(t, np.ones((1, 1), bool), t, np.zeros((1, 1), bool),
                                           SPAN))
    assert s["n_missed"] == 1 and s["rmse"]["phi_deg"] == pytest.approx(120.0)
    assert math.isnan(s["rmse_matched"]["phi_deg"])


def test_false_alarms_are_counted():
    t = np.array([[(0.0, 0.0, 3.0), (0, 0, 0)]])
    e = np.array([[(0.0, 0.0, 3.0), (0.7, 0.2, 4.0)]])
    m = match_sources(t, np.array([[True, False]]), e, np.ones((1, 2), bool), SPAN)
    assert m.n_false == 1 and m.matched.tolist() == [True]


def test_k_accuracy():
    assert k_accuracy(torch.tensor([1, 2, 3, 3]), torch.tensor([1, 2, 2, 3])) == 0.75
