"""The physics stage (riswb/reference/refinement.py) against brute force on small cases."""

from __future__ import annotations

import pytest
import torch

from riswb.reference.physics.baselines import dml
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import deployment, simulate_scenes
from riswb.reference.refinement import Refiner


@pytest.fixture(scope="module")
def preset():
    return get_preset("small")


@pytest.fixture(scope="module")
def refiner(preset):
    return Refiner(preset, *deployment(preset))


@pytest.fixture(scope="module")
def scenes(preset):
    return simulate_scenes(preset, 12, seed=5, snr_db=20.0)


def _truth(batch):
    return torch.stack([batch.phi, batch.theta, batch.r], -1)


def _proposal(batch, preset, shift_deg=4.0, r=None):
    """The truth moved by shift_deg in φ and θ (inside the field of view), range at r (the
    centre by default): a network's guess that is off but in the right region."""
    pos = _truth(batch).clone()
    shift = torch.deg2rad(torch.tensor(shift_deg))
    pos[..., 0] = (pos[..., 0] + shift).clamp(*preset.phi_range)
    pos[..., 1] = (pos[..., 1] - shift).clamp(*preset.theta_range)
    pos[..., 2] = sum(preset.r_range) / 2 if r is None else r
    empty = ~batch.mask
    pos[empty] = torch.tensor([0.0, 0.0, sum(preset.r_range) / 2])
    return pos


def _one_hot_logits(k, k_max, strength=20.0):
    return torch.nn.functional.one_hot(k - 1, k_max).float() * strength


def test_refined_cost_is_not_above_the_proposal(refiner, scenes, preset):
    """J at the refined positions ≤ J at the proposal, scene by scene (K from a confident
    k head equal to the truth)."""
    prop = _proposal(scenes, preset)
    pos, _ = refiner(scenes.y, prop, _one_hot_logits(scenes.k, preset.k_max), sweeps=2)
    for kk in scenes.k.unique().tolist():
        sel = scenes.k == kk
        j0 = dml.dml_cost(preset, scenes.y[sel], scenes.H, scenes.codes, prop[sel, :kk])
        j1 = dml.dml_cost(preset, scenes.y[sel], scenes.H, scenes.codes, pos[sel, :kk])
        assert (j1 <= j0 * (1 + 1e-9)).all()
        assert (j1 < 0.5 * j0).all()  # a 4° miss at 20 dB leaves most of the signal


def test_refinement_finds_the_sources_at_high_snr(refiner, scenes, preset):
    prop = _proposal(scenes, preset)
    pos, log_post = refiner(scenes.y, prop, _one_hot_logits(scenes.k, preset.k_max), 3)
    err = (pos - _truth(scenes))[scenes.mask]
    assert torch.rad2deg(err[:, :2].abs()).max() < 1.0  # from 4° off to well under 1°
    assert err[:, 2].abs().mean() < 0.6  # range from the centre (1.5 m off at most)
    assert (log_post.argmax(-1) + 1 == scenes.k).all()


def test_an_uninformative_range_stays_with_the_network(refiner, preset):
    """At -10 dB the data say little: the MAP step keeps near the network's range."""
    batch = simulate_scenes(preset, 8, seed=6, snr_db=-10.0)
    prop = _truth(batch).clone()
    prop[..., 2] = 4.5
    prop[~batch.mask] = torch.tensor([0.0, 0.0, 4.5])
    pos, _ = refiner(batch.y, prop, _one_hot_logits(batch.k, preset.k_max), 2)
    moved = (pos[..., 2] - 4.5)[batch.mask].abs()
    assert moved.mean() < 0.5


def test_fused_k_follows_the_data_when_the_head_is_unsure(refiner, scenes, preset):
    """A flat k head leaves K to the likelihood (BIC): exact at 20 dB on these scenes."""
    prop = _proposal(scenes, preset)
    _, log_post = refiner(scenes.y, prop, torch.zeros(len(scenes), preset.k_max), 2)
    assert (log_post.argmax(-1) + 1 == scenes.k).float().mean() >= 0.9


def test_extend_keeps_the_fit_and_adds_unclaimed_slots():
    from riswb.reference.refinement import _extend

    fit = torch.tensor([[[0.30, 0.0, 0.25]]], dtype=torch.float64)  # one refined slot
    full = torch.tensor([[[-0.5, 0.1, 0.2], [0.31, 0.0, 0.3], [0.6, -0.2, 0.22]]],
                        dtype=torch.float64)
    out = _extend(fit, full)
    assert torch.equal(out[0, 0], fit[0, 0])  # the fit's slot first, as refined
    assert torch.equal(out[0, 1:], full[0, [0, 2]])  # the one it claimed (nearest) is gone


def test_detection_keeps_real_sources_and_drops_empty_slots(refiner, scenes, preset):
    """At 20 dB every true source passes the residual-share test; a slot placed where no
    source is (another scene's source) does not."""
    from riswb.reference.physics.baselines._common import to_search

    truth = _truth(scenes).double()
    two = scenes.k == 2
    x = truth[two].clone()
    x[:, 2] = torch.tensor([0.05, -0.5, 5.5], dtype=torch.float64)  # an empty corner
    detected = refiner._detected(scenes.y[two].to(torch.complex128), to_search(x))
    assert detected[:, :2].all() and not detected[:, 2].any()
