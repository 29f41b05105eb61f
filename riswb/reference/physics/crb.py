"""Cramér–Rao bound for the coded near-field measurement model (Slepian–Bangs).

y_l ~ CN(0, C_l),  C_l = G_l A P Aᴴ G_lᴴ + σ² I_M,  G_l = H diag(c_l),
parameters η = (φ_1..φ_K, θ_1..θ_K, r_1..r_K, p_1..p_K, σ²):
    FIM_ij = Σ_l Re tr(C_l⁻¹ ∂_iC_l C_l⁻¹ ∂_jC_l),
with ∂C by forward-mode autograd in float64. Source powers and the noise variance are
nuisance parameters: the bound on (φ, θ, r) is read off the diagonal of the full FIM⁻¹.
"""

from __future__ import annotations

import torch
from torch.func import jacfwd, vmap

from riswb.reference.physics.covariance import coded_operators
from riswb.reference.physics.geometry import ris_positions
from riswb.reference.physics.presets import Preset
from riswb.reference.physics.steering import steering_exact


def coded_covariance(g: torch.Tensor, a: torch.Tensor, power: torch.Tensor,
                     noise_var: torch.Tensor) -> torch.Tensor:
    """C_l = G_l A P Aᴴ G_lᴴ + σ²I for g (L, M, N), steering rows a (K, N): (L, M, M)."""
    ga = g @ a.T.to(g.dtype)  # (L, M, K)
    eye = torch.eye(g.shape[1], dtype=g.dtype, device=g.device)
    return (ga * power.to(g.dtype)) @ ga.mH + noise_var * eye


def slepian_bangs_fim(cov_fn, params: torch.Tensor) -> torch.Tensor:
    """FIM (P, P) for y_l ~ CN(0, C_l(η)), cov_fn: η (P,) float64 → C (L, M, M) complex."""
    c = cov_fn(params)
    jac = jacfwd(lambda p: torch.view_as_real(cov_fn(p)))(params)  # (L, M, M, 2, P)
    dc = torch.complex(jac[..., 0, :], jac[..., 1, :]).movedim(-1, 0)  # (P, L, M, M)
    t = torch.linalg.solve(c, dc)  # C⁻¹ ∂_iC
    return torch.einsum("ilab,jlba->ij", t, t).real


def near_field_crb(preset: Preset, h: torch.Tensor, codes: torch.Tensor, phi: torch.Tensor,
                   theta: torch.Tensor, r: torch.Tensor, power: torch.Tensor,
                   mask: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
    """√CRB (B, K_max, 3) of (φ rad, θ rad, r m) per source; NaN in empty slots.

    Scenes are grouped by source count; each group is one vmap over its scenes."""
    g = coded_operators(h, codes).to(torch.complex128)
    pos = ris_positions(preset, dtype=torch.float64, device=h.device)
    b, k_max = phi.shape
    out = torch.full((b, k_max, 3), torch.nan, dtype=torch.float64, device=h.device)
    k = mask.sum(-1)

    for kk in k.unique().tolist():  # one group per source count (≤ K_max groups)
        if kk == 0:
            continue
        sel = (k == kk).nonzero()[:, 0]

        def cov_fn(p, kk=kk):
            a = steering_exact(pos, p[:kk], p[kk:2 * kk], p[2 * kk:3 * kk], preset.wavelength)
            return coded_covariance(g, a, p[3 * kk:4 * kk], p[4 * kk])

        params = torch.cat([t[sel, :kk].to(torch.float64) for t in (phi, theta, r, power)]
                           + [noise_var[sel, None].to(torch.float64)], -1)
        fim = vmap(lambda p, f=cov_fn: slepian_bangs_fim(f, p))(params)
        var = torch.diagonal(torch.linalg.inv(fim), dim1=-2, dim2=-1)[:, : 3 * kk]
        out[sel, :kk] = var.clamp_min(0).sqrt().reshape(-1, 3, kk).transpose(1, 2)
    return out
