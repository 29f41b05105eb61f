"""Batched near-field MUSIC: pseudo-spectrum on a φ×θ×r grid, peak picking with
non-maximum suppression, and local refinement.

With R's eigenvectors u_1..u_N (descending eigenvalues) and scene b's source count K_b,
the noise projector is Π_b = I − Σ_{k≤K_b} u_k u_kᴴ, and for unit-norm a
    P(φ, θ, r) = 1 / aᴴ Π_b a = 1 / (1 − Σ_{k≤K_b} |u_kᴴ a|²).
All scenes and grid points are evaluated at once (the grid in chunks to bound memory).
The range axis is uniform in 1/r, the variable the wavefront curvature is linear in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from riswb.linalg import hermitize
from riswb.reference.physics.geometry import direction, ris_positions
from riswb.reference.physics.presets import Preset
from riswb.reference.physics.steering import steering_exact

_FLOOR = 1e-7  # smallest null-spectrum value: caps P at 10⁷ (R_true peaks are exact)


@dataclass(frozen=True)
class MusicGrid:
    """Search grid: phi (Gφ,), theta (Gθ,) in radians, r (Gr,) in metres (uniform in 1/r)."""

    phi: torch.Tensor
    theta: torch.Tensor
    r: torch.Tensor

    @classmethod
    def for_preset(cls, preset: Preset, step_deg: float = 2.0, n_r: int = 12) -> MusicGrid:
        def axis(lo, hi):
            n = int(round((hi - lo) / torch.pi * 180 / step_deg)) + 1
            return torch.linspace(lo, hi, n, dtype=torch.float64)

        r_lo, r_hi = preset.r_range
        inv_r = torch.linspace(1 / r_hi, 1 / r_lo, n_r, dtype=torch.float64)
        return cls(axis(*preset.phi_range), axis(*preset.theta_range), 1 / inv_r.flip(0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.phi), len(self.theta), len(self.r))

    def points(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flattened (G,) coordinates in (φ, θ, r) C-order."""
        p, t, r = torch.meshgrid(self.phi, self.theta, self.r, indexing="ij")
        return p.reshape(-1), t.reshape(-1), r.reshape(-1)


@dataclass
class Localization:
    """Estimated sources (B, K_max): phi, theta (rad), r (m); mask marks real estimates."""

    phi: torch.Tensor
    theta: torch.Tensor
    r: torch.Tensor
    mask: torch.Tensor
    k: torch.Tensor  # (B,) the K used for each scene's noise subspace


def signal_subspace(r: torch.Tensor, k: torch.Tensor, k_max: int) -> torch.Tensor:
    """The top-k_max eigenvectors (B, k_max, N) as rows uₖᴴ·… with slots ≥ K_b zeroed."""
    _, vecs = torch.linalg.eigh(hermitize(r))
    top = vecs[..., -k_max:].flip(-1)  # (B, N, k_max), descending eigenvalues
    keep = torch.arange(k_max, device=r.device)[None, :] < k[:, None]
    return (top * keep[:, None, :]).mH  # (B, k_max, N): row k is u_kᴴ


def null_spectrum(us: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """aᴴ Π a = 1 − Σ_k |u_kᴴ a|² for us (B, K, N) and a (G, N) or (B, ..., N) → (B, G | ...)."""
    if a.dim() == 2:
        proj = us @ a.T  # (B, K, G)
        shape = (us.shape[0], a.shape[0])
    else:
        proj = us @ a.reshape(a.shape[0], -1, a.shape[-1]).mT  # (B, K, prod(...))
        shape = a.shape[:-1]
    return (1 - proj.abs().square().sum(1)).clamp_min(_FLOOR).reshape(shape)


def music_spectrum(r: torch.Tensor, k: torch.Tensor, preset: Preset, grid: MusicGrid,
                   k_max: int | None = None, chunk: int = 8192) -> torch.Tensor:
    """Pseudo-spectrum 1/(aᴴΠa) on the grid: (B, Gφ, Gθ, Gr) float32."""
    return subspace_spectrum(signal_subspace(r, k, k_max or preset.k_max), preset, grid, chunk)


def subspace_spectrum(us: torch.Tensor, preset: Preset, grid: MusicGrid,
                      chunk: int = 8192) -> torch.Tensor:
    """`music_spectrum` from a signal subspace us (B, K, N) given by `signal_subspace`."""
    pos = ris_positions(preset, dtype=torch.float64, device=us.device)
    gp, gt, gr = (t.to(us.device) for t in grid.points())
    out = []
    for start in range(0, gp.numel(), chunk):  # chunks of grid points bound the memory
        sl = slice(start, start + chunk)
        a = steering_exact(pos, gp[sl], gt[sl], gr[sl], preset.wavelength).to(us.dtype)
        out.append(null_spectrum(us, a))
    return (1 / torch.cat(out, -1)).reshape(us.shape[0], *grid.shape).float()


def pick_peaks(spectrum: torch.Tensor, k: torch.Tensor, grid: MusicGrid, k_max: int,
               radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to k_b peaks per scene: 3-D local maxima, taken greedily from the highest, each
    suppressing every grid point within `radius` (angle between directions, any range).
    Returns flat grid indices (B, k_max) and a mask of the peaks found (slot < k_b)."""
    b = spectrum.shape[0]
    logs = torch.log(spectrum).unsqueeze(1)
    pooled = F.max_pool3d(F.pad(logs, (1, 1, 1, 1, 1, 1), value=-torch.inf), 3, stride=1)
    score = torch.where(logs == pooled, logs, -torch.inf).reshape(b, -1)
    gp, gt, _ = (t.to(spectrum.device) for t in grid.points())
    u_grid = direction(gp, gt).float()  # (G, 3)
    cos_radius = torch.cos(torch.tensor(radius))
    idx = torch.zeros(b, k_max, dtype=torch.long, device=spectrum.device)
    found = torch.zeros(b, k_max, dtype=torch.bool, device=spectrum.device)
    for j in range(k_max):  # greedy NMS over peak slots, batched over scenes
        best = score.argmax(-1)
        ok = torch.isfinite(score.gather(1, best[:, None]))[:, 0] & (j < k)
        idx[:, j], found[:, j] = best, ok
        near = (u_grid[best] @ u_grid.T) > cos_radius  # (B, G)
        score = torch.where(near, -torch.inf, score)
    return idx, found


def refine_peaks(us: torch.Tensor, phi, theta, r, preset: Preset, grid: MusicGrid,
                 iterations: int = 12):
    """Pattern search on aᴴΠa around each peak in (φ, θ, 1/r): try the 3×3×3 neighbours at
    the current step, move to the best, halve the step (steps start at the grid spacing).
    phi/theta/r (B, K) float64; returns refined copies clamped to the field of view."""
    pos = ris_positions(preset, dtype=torch.float64, device=us.device)
    steps = torch.tensor([
        (grid.phi[1] - grid.phi[0]).item() if len(grid.phi) > 1 else 0.0,
        (grid.theta[1] - grid.theta[0]).item() if len(grid.theta) > 1 else 0.0,
        (1 / grid.r[0] - 1 / grid.r[1]).item() if len(grid.r) > 1 else 0.0,
    ], dtype=torch.float64, device=us.device)
    o = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, device=us.device)
    offsets = torch.stack(torch.meshgrid(o, o, o, indexing="ij"), -1).reshape(-1, 3)  # (27, 3)
    lo = torch.tensor([preset.phi_range[0], preset.theta_range[0], 1 / preset.r_range[1]],
                      dtype=torch.float64, device=us.device)
    hi = torch.tensor([preset.phi_range[1], preset.theta_range[1], 1 / preset.r_range[0]],
                      dtype=torch.float64, device=us.device)
    x = torch.stack([phi, theta, 1 / r], -1)  # (B, K, 3)
    us64 = us.to(torch.complex128)
    for _ in range(iterations):
        cand = torch.minimum(torch.maximum(x[:, :, None, :] + offsets * steps, lo), hi)
        a = steering_exact(pos, cand[..., 0], cand[..., 1], 1 / cand[..., 2], preset.wavelength)
        cost = null_spectrum(us64, a)  # (B, K, 27)
        x = cand.gather(2, cost.argmin(-1)[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]
        steps = steps / 2
    return x[..., 0], x[..., 1], 1 / x[..., 2]


def music_localize(r: torch.Tensor, k: torch.Tensor, preset: Preset,
                   grid: MusicGrid | None = None, refine: bool = True) -> Localization:
    """Localize up to K_b sources per scene from R (B, N, N) with source counts k (B,)."""
    grid = grid or MusicGrid.for_preset(preset)
    k_max = preset.k_max
    k = k.clamp(1, k_max)
    us = signal_subspace(r, k, k_max)
    spectrum = subspace_spectrum(us, preset, grid)
    idx, found = pick_peaks(spectrum, k, grid, k_max, radius=0.5 * preset.min_separation)
    gp, gt, gr = (t.to(r.device) for t in grid.points())
    phi, theta, rr = gp[idx], gt[idx], gr[idx]
    if refine:
        phi, theta, rr = refine_peaks(us, phi, theta, rr, preset, grid)
    zero = torch.zeros((), dtype=phi.dtype, device=phi.device)
    phi, theta, rr = (torch.where(found, t, zero).float() for t in (phi, theta, rr))
    return Localization(phi=phi, theta=theta, r=rr, mask=found, k=k)
