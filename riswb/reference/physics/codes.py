"""RIS phase codebooks: one unit-modulus code c_l ∈ ℂᴺ per snapshot.

dft:    2D-DFT beams c_n = exp(j2π(i_h·p/n_h + i_v·q/n_v)), beams (p, q) spread over the grid
random: c_n = exp(jϑ_n), ϑ_n ~ U[0, 2π)
b-bit quantization rounds each phase to the nearest multiple of 2π/2ᵇ.
"""

from __future__ import annotations

import math

import torch

from riswb.reference.physics.presets import Preset


def dft_codebook(n_h: int, n_v: int, n_codes: int) -> torch.Tensor:
    """(n_codes, N) 2D-DFT beams, evenly strided through the n_h·n_v beam grid."""
    beams = torch.div(torch.arange(n_codes) * (n_h * n_v), n_codes, rounding_mode="floor")
    p, q = beams % n_h, beams // n_h
    ih = torch.arange(n_h, dtype=torch.float64)
    iv = torch.arange(n_v, dtype=torch.float64)
    phase = 2 * math.pi * (
        p[:, None, None] * ih[None, None, :] / n_h + q[:, None, None] * iv[None, :, None] / n_v
    )
    return torch.polar(torch.ones_like(phase), phase).reshape(n_codes, n_h * n_v)


def random_codebook(n: int, n_codes: int, generator: torch.Generator) -> torch.Tensor:
    """(n_codes, N) codes with i.i.d. uniform phases."""
    phase = 2 * math.pi * torch.rand(n_codes, n, generator=generator, dtype=torch.float64)
    return torch.polar(torch.ones_like(phase), phase)


def quantize_phases(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Round every phase to the nearest multiple of 2π/2ᵇ (unit modulus kept)."""
    step = 2 * math.pi / 2**bits
    phase = torch.round(torch.angle(codes) / step) * step
    return torch.polar(torch.ones_like(phase), phase).to(codes.dtype)


def make_codes(preset: Preset, generator: torch.Generator) -> torch.Tensor:
    """(L, N) complex64 codes for the preset's codebook and quantization."""
    if preset.codebook == "dft":
        codes = dft_codebook(preset.n_h, preset.n_v, preset.l)
    elif preset.codebook == "random":
        codes = random_codebook(preset.n, preset.l, generator)
    else:
        raise ValueError(f"unknown codebook {preset.codebook!r} (dft|random)")
    if preset.code_bits is not None:
        codes = quantize_phases(codes, preset.code_bits)
    return codes.to(torch.complex64)
