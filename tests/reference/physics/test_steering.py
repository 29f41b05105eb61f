import math

import pytest
import torch

from riswb.reference.physics.geometry import fraunhofer_distance, fresnel_limit, ris_positions
from riswb.reference.physics.presets import PRESETS, get_preset
from riswb.reference.physics.steering import steering_exact, steering_farfield, steering_fresnel


def _angles(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    phi = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 2 * math.radians(60)
    theta = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 2 * math.radians(30)
    return phi, theta


def _phase_error(a, b):
    return torch.angle(a * b.conj()).abs().amax(-1)


def test_exact_matches_brute_force_distance():
    p = get_preset("small")
    pos = ris_positions(p, dtype=torch.float64)
    phi, theta = _angles(50)
    r = torch.linspace(2.0, 30.0, 50, dtype=torch.float64)
    u = torch.stack([torch.cos(theta) * torch.sin(phi), torch.sin(theta),
                     torch.cos(theta) * torch.cos(phi)], -1)
    r_n = (r[:, None, None] * u[:, None, :] - pos[None]).norm(dim=-1)
    k = 2 * math.pi / p.wavelength
    brute = torch.exp(-1j * k * (r_n - r[:, None])) / 8
    a = steering_exact(pos, phi, theta, r, p.wavelength)
    assert torch.allclose(a, brute, atol=1e-10)
    assert torch.allclose(a.norm(dim=-1), torch.ones(50, dtype=torch.float64))


def test_float32_steering_agrees_with_float64():
    p = get_preset("paper")
    phi, theta = _angles(100)
    r = torch.full_like(phi, 10.0)
    a64 = steering_exact(ris_positions(p, dtype=torch.float64), phi, theta, r, p.wavelength)
    a32 = steering_exact(ris_positions(p), phi.float(), theta.float(), r.float(), p.wavelength)
    assert a32.dtype == torch.complex64
    assert _phase_error(a32.to(torch.complex128), a64).max() < 1e-4


def test_fresnel_error_small_at_preset_ranges_and_falls_as_one_over_r_squared():
    for p in PRESETS.values():
        pos = ris_positions(p, dtype=torch.float64)
        phi, theta = _angles()
        errs = []
        for r0 in (fresnel_limit(p), p.r_range[0], 2 * p.r_range[0]):
            r = torch.full_like(phi, r0)
            errs.append(_phase_error(steering_fresnel(pos, phi, theta, r, p.wavelength),
                                     steering_exact(pos, phi, theta, r, p.wavelength)).max())
        assert errs[0] < math.pi / 8  # the Fresnel limit is where the error reaches ~π/8
        assert errs[1] < 0.3
        assert 0.15 < errs[2] / errs[1] < 0.35  # third-order term: ∝ 1/r²


def test_dropping_the_q_squared_term_is_far_worse():
    """docs/failures.md #23: −q²/(2r) is radians of phase at a few metres."""
    p = get_preset("paper")
    pos = ris_positions(p, dtype=torch.float64)
    phi, theta = _angles()
    r = torch.full_like(phi, p.r_range[0])
    exact = steering_exact(pos, phi, theta, r, p.wavelength)
    good = _phase_error(steering_fresnel(pos, phi, theta, r, p.wavelength), exact).max()
    k = 2 * math.pi / p.wavelength
    ux, uy = torch.cos(theta) * torch.sin(phi), torch.sin(theta)
    q = ux[:, None] * pos[:, 0] + uy[:, None] * pos[:, 1]
    bad = torch.exp(-1j * k * (-q + (pos[:, :2] ** 2).sum(-1) / (2 * r[:, None]))) / 12
    assert good < 0.3
    assert _phase_error(bad, exact).max() > 1.0


def test_far_field_limit():
    p = get_preset("small")
    pos = ris_positions(p, dtype=torch.float64)
    phi, theta = _angles(100)
    ff = steering_farfield(pos, phi, theta, p.wavelength)
    gaps = []
    for r0 in (fraunhofer_distance(p), 10 * fraunhofer_distance(p), 1e7):
        a = steering_exact(pos, phi, theta, torch.full_like(phi, r0), p.wavelength)
        gaps.append((a - ff).norm(dim=-1).max().item())
    assert gaps[0] < 0.5  # within the far-field π/8 convention
    assert gaps[1] == pytest.approx(gaps[0] / 10, rel=0.05)  # ∝ 1/r
    assert gaps[2] < 1e-5


def test_steering_is_differentiable_in_all_coordinates():
    p = get_preset("small")
    x = torch.tensor([0.2, 0.1, 4.0], dtype=torch.float64, requires_grad=True)
    a = steering_exact(ris_positions(p, dtype=torch.float64), x[0], x[1], x[2], p.wavelength)
    (a.real.sum() + a.imag.sum()).backward()
    assert torch.all(x.grad != 0)
