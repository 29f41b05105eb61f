"""Shared pieces of the localization baselines: the estimate container, coded steering
g_l(η) = G_l a(η) (docs/design.md §7), projections, a batched pattern search, and the
residual-share stopping rule used when K is estimated.

Searches run in (φ, θ, 1/r): the wavefront curvature is linear in 1/r, as in
`riswb/reference/physics/music.py`, whose grid (`MusicGrid`) the baselines share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from riswb.reference.physics.covariance import coded_operators
from riswb.reference.physics.geometry import direction, ris_positions
from riswb.reference.physics.music import MusicGrid
from riswb.reference.physics.presets import Preset
from riswb.reference.physics.steering import steering_exact

SHARE_TAU = 2.5  # a pick must explain τ× the share a random direction takes from white noise


@dataclass
class Estimate:
    """Estimated sources: pos (B, K_MAX, 3) float64 as (φ rad, θ rad, r m), mask (B, K_MAX)
    marking real estimates (the first k slots), k (B,) int64 = mask.sum(-1)."""

    pos: torch.Tensor
    mask: torch.Tensor
    k: torch.Tensor

    @classmethod
    def from_slots(cls, pos: torch.Tensor, mask: torch.Tensor) -> Estimate:
        pos = torch.where(mask[..., None], pos.to(torch.float64), 0.0)
        return cls(pos=pos, mask=mask, k=mask.sum(-1))



def in_chunks(fn: Callable[[torch.Tensor, torch.Tensor | None], Estimate], y: torch.Tensor,
              k: torch.Tensor | None, chunk: int) -> Estimate:
    """fn(y_chunk, k_chunk) over chunks of scenes (bounds the (L, B, G) correlations)."""
    parts = [fn(y[i:i + chunk], None if k is None else k[i:i + chunk])
             for i in range(0, len(y), chunk)]
    return Estimate(*(torch.cat([getattr(p, f) for p in parts]) for f in ("pos", "mask", "k")))


def first_slots(k: torch.Tensor, k_max: int) -> torch.Tensor:
    """(B, k_max) mask with the first k_b slots set."""
    return torch.arange(k_max, device=k.device)[None, :] < k[:, None]


def operators(h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """G_l = H diag(c_l) (L, M, N) in complex128."""
    return coded_operators(h, codes).to(torch.complex128)


def coded_steering(preset: Preset, g_ops: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """g_l = G_l a(η) for x (..., 3) = (φ, θ, 1/r): (..., L, M), complex128."""
    pos = ris_positions(preset, dtype=torch.float64, device=x.device)
    a = steering_exact(pos, x[..., 0], x[..., 1], 1 / x[..., 2], preset.wavelength)
    return torch.einsum("lmn,...n->...lm", g_ops, a)


def grid_atoms(preset: Preset, g_ops: torch.Tensor, grid: MusicGrid) -> torch.Tensor:
    """Per-snapshot dictionaries G_l A_grid as (L, M, G) complex64, columns unit-norm per l."""
    gp, gt, gr = grid.points()
    a = steering_exact(ris_positions(preset, dtype=torch.float64), gp, gt, gr, preset.wavelength)
    atoms = g_ops @ a.T  # (L, M, G)
    return (atoms / atoms.norm(dim=1, keepdim=True)).to(torch.complex64)


def grid_coords(grid: MusicGrid) -> torch.Tensor:
    """Grid points (G, 3) as (φ, θ, 1/r), float64."""
    gp, gt, gr = grid.points()
    return torch.stack([gp, gt, 1 / gr], -1)


def grid_steps(grid: MusicGrid) -> torch.Tensor:
    """Grid spacing in (φ, θ, 1/r): the pattern search's initial step."""
    def step(axis):
        return float((axis[1] - axis[0]).abs()) if len(axis) > 1 else 0.0
    return torch.tensor([step(grid.phi), step(grid.theta), step(1 / grid.r)], dtype=torch.float64)


def bounds(preset: Preset) -> tuple[torch.Tensor, torch.Tensor]:
    """Field of view as (lo, hi) in (φ, θ, 1/r)."""
    lo = torch.tensor([preset.phi_range[0], preset.theta_range[0], 1 / preset.r_range[1]],
                      dtype=torch.float64)
    hi = torch.tensor([preset.phi_range[1], preset.theta_range[1], 1 / preset.r_range[0]],
                      dtype=torch.float64)
    return lo, hi


def to_pos(x: torch.Tensor) -> torch.Tensor:
    """(φ, θ, 1/r) → (φ, θ, r); the map is its own inverse (`to_search`)."""
    return torch.stack([x[..., 0], x[..., 1], 1 / x[..., 2]], -1)


to_search = to_pos  # (φ, θ, r) → (φ, θ, 1/r), the search coordinates: the same map


def suppress_near(score: torch.Tensor, grid_u: torch.Tensor, picked_u: torch.Tensor,
                  radius: float) -> torch.Tensor:
    """−inf where a grid direction lies within `radius` of a picked one: score (B, G),
    grid_u (G, 3), picked_u (B, J, 3)."""
    if picked_u.shape[1] == 0:
        return score
    near = ((picked_u.float() @ grid_u.T.float()) > torch.cos(torch.tensor(radius))).any(1)
    return score.masked_fill(near, -torch.inf)


def unit_directions(x: torch.Tensor) -> torch.Tensor:
    """Direction vectors u (..., 3) of points x (..., 3) in (φ, θ, ·)."""
    return direction(x[..., 0], x[..., 1])


def explained(res: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Σ_l |g_lᴴ res_l|² / ‖g_l‖²: the residual energy a source at g removes when its
    per-snapshot amplitude is free (res (B, L, M), g (B, C, L, M)) → (B, C)."""
    num = torch.einsum("bclm,blm->bcl", g.conj(), res).abs().square()
    return (num / g.abs().square().sum(-1).clamp_min(1e-300)).sum(-1)


def project_out(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(I − Q Qᴴ) v per snapshot: q (B, L, M, J) orthonormal columns, v (B, [C,] L, M)."""
    if q.shape[-1] == 0:
        return v
    if v.dim() == 3:
        return v - torch.einsum("blmj,blj->blm", q, torch.einsum("blmj,blm->blj", q.conj(), v))
    coef = torch.einsum("blmj,bclm->bclj", q.conj(), v)
    return v - torch.einsum("blmj,bclj->bclm", q, coef)


def orthonormal_basis(cols: torch.Tensor) -> torch.Tensor:
    """Q (B, L, M, J) spanning the columns cols (B, L, M, J), by reduced QR."""
    if cols.shape[-1] == 0:
        return cols
    return torch.linalg.qr(cols).Q


def pattern_search(cost: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   step: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                   iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Compass search batched over points x (B, 3): evaluate the 3×3×3 neighbours at the
    current step, move to the cheapest, halve a point's step only when its centre won (a
    fixed halving schedule could not travel more than two grid steps). cost maps (B, C, 3)
    to (B, C). Returns (x, step) so a coordinate sweep can resume where it stopped."""
    o = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    offsets = torch.stack(torch.meshgrid(o, o, o, indexing="ij"), -1).reshape(-1, 3)
    centre = 13  # offset (0, 0, 0)
    for _ in range(iterations):
        cand = torch.minimum(torch.maximum(x[:, None, :] + offsets * step[:, None, :], lo), hi)
        c = cost(cand)
        best = c.argmin(-1)
        # a neighbour clamped onto the centre ties with it: only a strict gain is a move
        best = torch.where(c.gather(1, best[:, None])[:, 0] < c[:, centre], best, centre)
        x = cand[torch.arange(len(x)), best]
        step = torch.where((best == centre)[:, None], step / 2, step)
    return x, step


def count_picks(share: torch.Tensor, m: int, tau: float = SHARE_TAU) -> torch.Tensor:
    """K̂ (B,) from the residual shares (B, S) of greedy picks: the leading picks whose share
    of the residual energy reaches τ/(M − j) for pick j (0-based). A fixed direction takes
    1/(M − j) of white noise filling the M − j dimensions per snapshot left after j picks;
    τ > 1 covers the maximum over the grid. The first pick always counts: every scene holds
    at least one source."""
    j = torch.arange(share.shape[1], dtype=share.dtype)
    ok = (share >= tau / (m - j)) | (j == 0)
    return ok.to(torch.long).cumprod(-1).sum(-1)
