import math

import pytest
import torch

from riswb.reference.physics.geometry import direction
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import deployment, simulate_scenes


@pytest.fixture(scope="module")
def batch():
    return simulate_scenes("small", 64, seed=3, snr_db=(0.0, 20.0))


def test_shapes_and_dtypes(batch):
    p = get_preset("small")
    b, k = 64, p.k_max
    for name in ("phi", "theta", "r", "power"):
        assert getattr(batch, name).shape == (b, k)
        assert getattr(batch, name).dtype == torch.float32
    assert batch.mask.dtype == torch.bool and batch.k.dtype == torch.int64
    assert batch.y.shape == (b, p.l, p.m) and batch.y.dtype == torch.complex64
    assert batch.codes.shape == (p.l, p.n) and batch.H.shape == (p.m, p.n)
    assert batch.R_true.shape == batch.R_samp.shape == (b, p.n, p.n)
    assert torch.equal(batch.mask.sum(-1), batch.k)
    assert torch.all(batch.phi[~batch.mask] == 0) and torch.all(batch.power[~batch.mask] == 0)


def test_sources_are_in_view_and_separated(batch):
    p = get_preset("small")
    m = batch.mask
    for t, (lo, hi) in ((batch.phi, p.phi_range), (batch.theta, p.theta_range),
                        (batch.r, p.r_range)):
        assert torch.all((t[m] >= lo - 1e-6) & (t[m] <= hi + 1e-6))
    u = direction(batch.phi.double(), batch.theta.double())
    ang = torch.acos((u @ u.mT).clamp(-1, 1))
    pair = m[:, :, None] & m[:, None, :] & ~torch.eye(p.k_max, dtype=torch.bool)
    assert ang[pair].min() >= p.min_separation - 1e-5
    assert set(batch.k.tolist()) == set(range(1, p.k_max + 1))
    assert torch.all((batch.snr_db >= 0) & (batch.snr_db <= 20))


def test_r_true_is_hermitian_psd_rank_k_trace_n(batch):
    r = batch.R_true.to(torch.complex128)
    assert torch.allclose(r, r.mH, atol=1e-5)
    trace = torch.diagonal(r, dim1=-2, dim2=-1).real.sum(-1)
    assert torch.allclose(trace, torch.full_like(trace, 64.0), rtol=1e-5)
    ev = torch.linalg.eigvalsh(r).flip(-1)
    assert ev.min() > -1e-4
    rank = (ev > 1e-4 * ev[:, :1]).sum(-1)
    assert torch.equal(rank, batch.k)


def test_r_samp_is_hermitian_with_trace_n(batch):
    r = batch.R_samp.to(torch.complex128)
    assert torch.allclose(r, r.mH, atol=1e-5)
    assert torch.allclose(torch.diagonal(r, dim1=-2, dim2=-1).real.sum(-1),
                          torch.full((64,), 64.0, dtype=torch.float64), rtol=1e-5)
    assert torch.linalg.eigvalsh(r).min() > -1e-3


def test_seeded_reproducible_and_deployment_fixed():
    a = simulate_scenes("small", 8, seed=11)
    b = simulate_scenes("small", 8, seed=11)
    c = simulate_scenes("small", 8, seed=12)
    assert torch.equal(a.y, b.y) and torch.equal(a.R_true, b.R_true)
    assert not torch.equal(a.phi, c.phi)
    h, codes = deployment(get_preset("small"))
    assert torch.equal(a.H, c.H) and torch.equal(a.H, h) and torch.equal(a.codes, codes)
    assert torch.allclose(codes.abs(), torch.ones(()))


def test_snr_sets_the_noise_power():
    """Empirical residual power of y minus its noise-free part matches σ²; σ² matches SNR."""
    p = get_preset("small")
    hi = simulate_scenes(p, 200, seed=5, snr_db=200.0)  # noise-free to float precision
    lo = simulate_scenes(p, 200, seed=5, snr_db=10.0)
    signal = hi.y.abs().square().mean()
    noise = (lo.y - hi.y).abs().square().mean()
    assert noise / lo.noise_var.mean() == pytest.approx(1.0, rel=0.05)
    assert 10 * math.log10(signal / noise) == pytest.approx(10.0, abs=0.5)


def test_slicing_and_len(batch):
    part = batch[2:5]
    assert len(part) == 3 and torch.equal(part.R_true, batch.R_true[2:5])
    assert torch.equal(part.H, batch.H)
    assert len(batch[0]) == 1
