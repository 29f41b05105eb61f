import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scoring import (
    evaluate_estimators,
    gospa,
    k_given_scores,
    prior_std,
)

TINY = dataclasses.replace(get_preset("small"), name="tiny", n_h=4, n_v=4, m=4, l=8, k_max=2,
                           r_range=(1.0, 2.0))


def _brute_gospa(t, e, c, p=2.0):
    """min over partial assignments (every injective pairing of some truths to estimates)."""
    best = math.inf
    for n in range(min(len(t), len(e)) + 1):
        for rows in itertools.combinations(range(len(t)), n):
            for cols in itertools.permutations(range(len(e)), n):
                d = [min(np.sqrt((((t[i] - e[j]) / c) ** 2).sum()), 1.0) ** p
                     for i, j in zip(rows, cols, strict=True)]
                best = min(best, sum(d) + 0.5 * (len(t) + len(e) - 2 * n))
    return best ** (1 / p)


@pytest.mark.parametrize("n_true,n_est", [(3, 3), (3, 1), (1, 3), (2, 4), (0, 2), (2, 0)])
def test_gospa_equals_brute_force(n_true, n_est):
    rng = np.random.default_rng(n_true * 10 + n_est)
    c = np.array([0.3, 0.2, 1.0])
    for _ in range(20):
        t = rng.uniform(-0.5, 0.5, (4, 3)) * [1, 1, 3]
        e = t + rng.normal(0, 0.15, (4, 3)) * [1, 1, 3]  # near and beyond the cut-off
        e = rng.permutation(e)
        tm, em = np.arange(4) < n_true, np.arange(4) < n_est
        out = gospa(t[None], tm[None], e[None], em[None], c)
        assert out.value[0] == pytest.approx(_brute_gospa(t[:n_true], e[:n_est], c))
        assert out.assigned[0] + out.missed[0] == n_true
        assert out.assigned[0] + out.false[0] == n_est


def test_gospa_counts_a_miss_and_a_false_alarm():
    t = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]])
    e = np.array([[[0.01, 0.0, 1.0], [5.0, 0.0, 1.0]]])
    out = gospa(t, np.ones((1, 2), bool), e, np.ones((1, 2), bool), np.array([0.1, 0.1, 1.0]))
    assert (out.assigned[0], out.missed[0], out.false[0]) == (1, 1, 1)
    assert out.value[0] == pytest.approx(math.sqrt(0.1**2 + 0.5 * 2))


def test_k_given_rmse_matches_hand_computation():
    span = np.array([2.0, 1.0, 3.0])
    t = np.zeros((2, 2, 3))
    t[0, 1] = [1.0, 0.5, 2.0]
    e = t.copy()
    e[0, 0] += [0.01, 0.02, 0.3]  # scene 0: two sources, listed in swapped order
    e[0, 1] += [0.03, 0.0, 0.1]
    e[0] = e[0, ::-1]
    e[1, 0] += [0.04, 0.04, 0.4]  # scene 1: one source; its second slot is empty
    tm = np.array([[True, True], [True, False]])
    out = k_given_scores(t, tm, e, tm, span)
    s0 = np.sqrt((np.array([0.01, 0.02, 0.3]) ** 2 + np.array([0.03, 0.0, 0.1]) ** 2) / 2)
    s1 = np.array([0.04, 0.04, 0.4])
    rmse, median = np.sqrt((s0**2 + s1**2) / 2), (s0 + s1) / 2
    assert out["scenes_scored"] == 2
    assert out["rmse"]["phi_deg"] == pytest.approx(math.degrees(rmse[0]))
    assert out["rmse"]["r_m"] == pytest.approx(rmse[2])
    assert out["median"]["theta_deg"] == pytest.approx(math.degrees(median[1]))


def test_evaluate_estimators_contract():
    c_keys = {"phi_deg", "theta_deg", "r_m"}
    calls = []

    def predict(batch):  # an oracle "model": R_true, the true K, the true positions
        calls.append(len(batch))
        aux = torch.stack([batch.phi, batch.theta, batch.r], -1)
        return batch.R_true, batch.k, aux

    for k_mode in ("true", "est"):
        out = evaluate_estimators(TINY, snr_db=20.0, scenes=4, seed=3, k_mode=k_mode,
                                  estimators=["prior", "pred", "random", "aux"],
                                  predict=predict)
        assert out["k_mode"] == k_mode and out["scenes"] == 4 and out["snr_db"] == 20.0
        assert set(out["crb"]["mean"]) == c_keys and set(out["crb"]["median"]) == c_keys
        rows = {r["estimator"]: r for r in out["rows"]}
        assert list(rows) == ["prior", "pred", "random", "aux"]  # the order asked for
        for row in rows.values():
            assert {"gospa", "detection_rate", "false_alarm_rate", "k_accuracy",
                    "seconds_per_scene"} <= set(row)
            assert (row["rmse"] is None) == (k_mode == "est")
        assert rows["pred"]["detection_rate"] == 1.0 and rows["pred"]["k_accuracy"] == 1.0
    assert calls == [4, 4]  # the model runs once for both of its rows
    with pytest.raises(ValueError, match="need a model"):
        evaluate_estimators(TINY, snr_db=20.0, scenes=2, seed=3, estimators=["pred"])
    other = evaluate_estimators(TINY, snr_db=20.0, scenes=2, seed=3, deployment_seed=99,
                                estimators=["prior"])
    assert other["deployment_seed"] == 99
    with pytest.raises(ValueError, match="deployment"):
        evaluate_estimators(TINY, snr_db=20.0, scenes=2, seed=3, deployment_seed=99,
                            estimators=[], predict=predict)


def test_prior_std_is_the_uniform_spread():
    p = get_preset("small")
    assert prior_std(p)[2] == pytest.approx(3.0 / math.sqrt(12))
