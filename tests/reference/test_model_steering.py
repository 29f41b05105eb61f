"""The steering head of `CovarianceNet`: R_pred built from exact steering vectors at the
aux head's positions, so MUSIC on R_pred returns the slots, and the physics stage."""

from __future__ import annotations

import pytest
import torch

from riswb.reference.losses import loss_terms, weighted_total
from riswb.reference.model import GATE_FLOOR, CovarianceNet
from riswb.reference.physics.geometry import ris_positions
from riswb.reference.physics.music import music_localize
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import simulate_scenes
from riswb.reference.physics.steering import steering_exact
from riswb.reference.spectral import spectral_decompose


@pytest.fixture(scope="module")
def preset():
    return get_preset("small")


@pytest.fixture(scope="module")
def batch(preset):
    return simulate_scenes(preset, 8, seed=1, snr_db=20.0)


@pytest.fixture(scope="module")
def model(preset):
    torch.manual_seed(0)
    return CovarianceNet(preset, width=64, head="steering")


def test_factor_columns_are_steering_vectors(model, batch, preset):
    out = model(batch.y)
    pos = ris_positions(preset)
    a = steering_exact(pos, out.aux[..., 0], out.aux[..., 1], out.aux[..., 2],
                       preset.wavelength)  # (B, K_MAX, N), unit norm
    f = out.factor.detach().mT
    amp = f.abs().square().sum(-1).sqrt()  # gate·√p per column
    torch.testing.assert_close(f, a.detach() * amp[..., None], atol=1e-6, rtol=1e-5)
    lo_db, hi_db = preset.power_db_range
    assert (amp >= GATE_FLOOR * 10 ** (lo_db / 20) - 1e-6).all()
    assert (amp <= 10 ** (hi_db / 20) + 1e-6).all()


def test_r_pred_keeps_the_low_rank_structure(model, batch, preset):
    out = model(batch.y)
    R = out.R_pred.detach()
    assert torch.equal(R, R.mH)
    tr = torch.diagonal(R, dim1=-2, dim2=-1).real.sum(-1)
    torch.testing.assert_close(tr, torch.full_like(tr, float(preset.n)), rtol=1e-5, atol=0)
    assert spectral_decompose(out.R_pred, batch.k, hint=out.factor).path == "lowrank"


def test_music_on_r_pred_returns_the_slots(preset, batch):
    """Brute force: MUSIC's K_MAX peaks on a parametric R_pred are its slot positions. The
    aux head is pinned (zero weights, bias at the logits of three separated positions)."""
    torch.manual_seed(0)
    net = CovarianceNet(preset, width=32, head="steering")
    slots = torch.tensor([[-0.6, 0.2, 3.4], [0.1, -0.3, 4.6], [0.7, 0.35, 5.7]])
    with torch.no_grad():
        z = ((slots - net.aux_lo) / net.aux_span).clamp(1e-4, 1 - 1e-4)
        net.aux_head.weight.zero_()
        net.aux_head.bias.copy_(torch.logit(z).reshape(-1))
        out = net(batch.y)
    torch.testing.assert_close(out.aux, slots.expand_as(out.aux))
    k = torch.full((len(batch),), preset.k_max)
    loc = music_localize(out.R_pred, k, preset)
    est = torch.stack([loc.phi, loc.theta, loc.r], -1)  # (B, K, 3)
    order = est[..., 0].argsort(-1)
    est = est.gather(1, order[..., None].expand(-1, -1, 3))
    err = (est - slots).abs()
    assert torch.rad2deg(err[..., :2]).max() < 0.05
    assert err[..., 2].max() < 0.05


def test_every_parameter_gets_a_gradient(model, batch, preset):
    model.zero_grad()
    weighted_total(loss_terms(model(batch.y), batch, preset)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    model.zero_grad()


def test_subspace_terms_train_the_positions(model, batch, preset):
    """The positions get gradient from the covariance terms alone (aux weight 0)."""
    out = model(batch.y)
    aux = out.aux
    aux.retain_grad()
    terms = loss_terms(out, batch, preset)
    terms["subspace_align"].backward()
    assert aux.grad is not None and aux.grad.abs().sum() > 0
    model.zero_grad()


def test_options_are_checked(preset):
    with pytest.raises(ValueError, match="head"):
        CovarianceNet(preset, head="grid")
    with pytest.raises(ValueError, match="steering"):
        CovarianceNet(preset, refine_steps=2)
    with pytest.raises(ValueError, match="refine_steps"):
        CovarianceNet(preset, head="steering", refine_steps=-1)


def test_refinement_runs_at_inference_only(preset, batch):
    torch.manual_seed(0)
    net = CovarianceNet(preset, width=64, head="steering", refine_steps=1)
    train_out = net(batch.y)  # training mode: the network alone
    net.eval()
    with torch.no_grad():
        refined = net(batch.y)
        with net.unrefined():
            plain = net(batch.y)
    torch.testing.assert_close(plain.R_pred, train_out.R_pred.detach())
    torch.testing.assert_close(refined.aux, plain.aux)  # aux stays the network's own
    assert not torch.allclose(refined.R_pred, plain.R_pred)
    # the fused K posterior is a distribution
    torch.testing.assert_close(refined.k_logits.exp().sum(-1), torch.ones(len(batch)))
    assert set(net.state_dict()) == {name for name, _ in net.named_parameters()}


def test_parameter_count_matches_docstring(preset):
    import riswb.reference.model as model_module

    count = sum(p.numel() for p in CovarianceNet(preset, head="steering").parameters())
    assert count == 2_368_015 and f"{count:,}" in model_module.__doc__
