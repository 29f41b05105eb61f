import math

import pytest
import torch

from riswb.reference.physics.crb import coded_covariance, near_field_crb, slepian_bangs_fim
from riswb.reference.physics.geometry import ris_positions
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import simulate_scenes
from riswb.reference.physics.steering import steering_farfield


@pytest.mark.parametrize("phi0,p,sigma2,n_snap", [(0.3, 1.0, 0.5, 16), (-0.7, 2.0, 0.1, 40)])
def test_matches_closed_form_stochastic_crb_far_field_ula(phi0, p, sigma2, n_snap):
    """Single source, 8-element λ/2 ULA on x, θ = 0, G_l = I; unknowns (φ, p, σ²).
    Stochastic CRB (Stoica–Nehorai) with ‖a‖ = 1, d = ∂a/∂φ = j k x cosφ ⊙ a:
        CRB(φ) = σ²(σ² + p) / (2 L p² · dᴴ(I − aaᴴ)d),
        dᴴ(I − aaᴴ)d = k² cos²φ·(mean x² − mean² x)."""
    lam = 0.3
    pos = ris_positions(8, 1, lam, dtype=torch.float64)
    g = torch.eye(8, dtype=torch.complex128).expand(n_snap, 8, 8)

    def cov_fn(x):
        a = steering_farfield(pos, x[:1], torch.zeros(1, dtype=torch.float64), lam)
        return coded_covariance(g, a, x[1:2], x[2])

    fim = slepian_bangs_fim(cov_fn, torch.tensor([phi0, p, sigma2], dtype=torch.float64))
    crb = torch.linalg.inv(fim)[0, 0].item()
    k, x = 2 * math.pi / lam, pos[:, 0]
    curvature = k**2 * math.cos(phi0) ** 2 * float((x**2).mean() - x.mean() ** 2)
    closed = sigma2 * (sigma2 + p) / (2 * n_snap * p**2 * curvature)
    assert crb == pytest.approx(closed, rel=0.01)


@pytest.fixture(scope="module")
def scene():
    return simulate_scenes("small", 4, seed=1, snr_db=10.0)


def _crb(preset, s, noise_var=None, codes=None):
    return near_field_crb(preset, s.H, s.codes if codes is None else codes, s.phi, s.theta,
                          s.r, s.power, s.mask, s.noise_var if noise_var is None else noise_var)


def test_crb_falls_with_snr_and_snapshots(scene):
    p = get_preset("small")
    base = _crb(p, scene)
    m = scene.mask
    assert torch.isnan(base[~m]).all() and torch.isfinite(base[m]).all() and (base[m] > 0).all()
    better_snr = _crb(p, scene, noise_var=scene.noise_var / 10)
    assert (better_snr[m] < base[m]).all()
    more_snaps = _crb(p, scene, codes=torch.cat([scene.codes, scene.codes]))
    # repeating every code doubles each FIM term: the bound falls by exactly √2
    assert torch.allclose(more_snaps[m] * math.sqrt(2), base[m], rtol=1e-6)
    fewer_snaps = _crb(p, scene, codes=scene.codes[:8])
    assert (fewer_snaps[m] > base[m]).all()
