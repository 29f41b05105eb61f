import torch

from riswb.reference.physics.channel import complex_normal
from riswb.reference.physics.covariance import backprojection_covariance, nmse, trace_normalize


def test_backprojection_is_the_sample_covariance_when_g_is_invertible():
    """Oracle: with square invertible G_l and no noise, x̂_l = x_l as reg → 0."""
    g = torch.Generator().manual_seed(0)
    n, n_snap = 6, 50
    h = complex_normal((n, n), g, torch.complex128)
    codes = torch.exp(2j * torch.pi * torch.rand(n_snap, n, generator=g, dtype=torch.float64))
    x = complex_normal((2, n_snap, n), g, torch.complex128)
    y = torch.einsum("mn,ln,bln->blm", h, codes, x)
    r = backprojection_covariance(y, h, codes, reg=1e-10)
    expect = trace_normalize(torch.einsum("bln,blk->bnk", x, x.conj()) / n_snap)
    assert torch.allclose(r, expect, atol=1e-6)


def test_nmse_oracles():
    g = torch.Generator().manual_seed(1)
    a = complex_normal((3, 5, 5), g)
    r = a @ a.mH
    assert torch.allclose(nmse(torch.zeros_like(r), r), torch.ones(3))
    assert torch.allclose(nmse(r, r), torch.zeros(3))
