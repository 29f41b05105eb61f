"""RIS element positions and the near-field distance limits of an aperture.

The RIS is a uniform planar array of n_h × n_v elements, spacing d = λ/2, centred at the
origin in the x–y plane (x along n_h, y along n_v, boresight +z); element n = i_v·n_h + i_h
sits at p_n = ((i_h − (n_h−1)/2)·d, (i_v − (n_v−1)/2)·d, 0).
"""

from __future__ import annotations

import math

import torch

from riswb.reference.physics.presets import Preset


def ris_positions(
    preset_or_n_h: Preset | int,
    n_v: int | None = None,
    wavelength: float | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Element positions (N, 3) in metres: `ris_positions(preset)` or `(n_h, n_v, λ)`."""
    if isinstance(preset_or_n_h, Preset):
        n_h, n_v, wavelength = preset_or_n_h.n_h, preset_or_n_h.n_v, preset_or_n_h.wavelength
    else:
        n_h = preset_or_n_h
        if n_v is None or wavelength is None:
            raise TypeError("ris_positions(n_h, n_v, wavelength) needs all three")
    d = wavelength / 2
    ih = torch.arange(n_h, dtype=torch.float64) - (n_h - 1) / 2
    iv = torch.arange(n_v, dtype=torch.float64) - (n_v - 1) / 2
    yy, xx = torch.meshgrid(iv * d, ih * d, indexing="ij")
    zz = torch.zeros(n_h * n_v, dtype=torch.float64)
    pos = torch.stack([xx.reshape(-1), yy.reshape(-1), zz], -1)
    return pos.to(dtype=dtype, device=device)


def aperture_diagonal(preset: Preset) -> float:
    """D = √((n_h·d)² + (n_v·d)²), d = λ/2: the diagonal of the physical aperture (m)."""
    d = preset.wavelength / 2
    return math.hypot(preset.n_h * d, preset.n_v * d)


def fresnel_limit(preset: Preset) -> float:
    """0.62·√(D³/λ): the reactive/radiating near-field boundary (m)."""
    return 0.62 * math.sqrt(aperture_diagonal(preset) ** 3 / preset.wavelength)


def fraunhofer_distance(preset: Preset) -> float:
    """2D²/λ: the radiating near-field/far-field boundary (m)."""
    return 2 * aperture_diagonal(preset) ** 2 / preset.wavelength


def direction(phi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Unit vector u = (cosθ sinφ, sinθ, cosθ cosφ), shape (..., 3)."""
    phi, theta = torch.broadcast_tensors(phi, theta)
    return torch.stack(
        [torch.cos(theta) * torch.sin(phi), torch.sin(theta), torch.cos(theta) * torch.cos(phi)], -1
    )
