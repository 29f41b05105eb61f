"""BS–RIS Rician channel.

H = √(κ/(κ+1))·√(MN)·b aᴴ + √(1/(κ+1))·W,   W_ij ~ CN(0, 1),
with b the BS half-wavelength ULA response and a the RIS far-field response toward the BS
(both unit norm), so E|H_ij|² = 1. The BS sits in the RIS far field (a static deployment).
"""

from __future__ import annotations

import math

import torch

from riswb.reference.physics.geometry import ris_positions
from riswb.reference.physics.presets import Preset
from riswb.reference.physics.steering import steering_farfield


def complex_normal(shape, generator: torch.Generator, dtype=torch.complex64) -> torch.Tensor:
    """Samples of CN(0, 1): real and imaginary parts N(0, 1/2)."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    z = torch.randn(*shape, 2, generator=generator, dtype=real) * math.sqrt(0.5)
    return torch.complex(z[..., 0], z[..., 1]).to(dtype)


def rician_channel(preset: Preset, generator: torch.Generator) -> torch.Tensor:
    """H (M, N) complex64 with Rician factor κ = 10^(preset.rician_k_db/10)."""
    kappa = 10 ** (preset.rician_k_db / 10)
    phi_bs, theta_bs = (torch.tensor(v, dtype=torch.float64) for v in preset.bs_direction)
    a = steering_farfield(ris_positions(preset, dtype=torch.float64), phi_bs, theta_bs,
                          preset.wavelength)
    psi = torch.sin(phi_bs) * torch.cos(theta_bs)
    b = torch.exp(1j * math.pi * psi * torch.arange(preset.m, dtype=torch.float64))
    b = b / math.sqrt(preset.m)
    los = math.sqrt(preset.m * preset.n) * torch.outer(b, a.conj())
    nlos = complex_normal((preset.m, preset.n), generator, torch.complex128)
    h = math.sqrt(kappa / (kappa + 1)) * los + math.sqrt(1 / (kappa + 1)) * nlos
    return h.to(torch.complex64)
