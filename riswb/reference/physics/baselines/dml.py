"""Deterministic maximum likelihood (DML) localization with K from BIC.

Each snapshot's symbols s_l are fresh (docs/design.md §7), so they are nuisance parameters
fitted per snapshot; concentrating them (and σ²) out of the Gaussian likelihood leaves
    J(η_1..η_K) = Σ_l ‖P⊥_{B_l} y_l‖²,   B_l = G_l [a(η_1) … a(η_K)]  (M × K),
to minimize over the K continuous positions. Start: the grid-only greedy path of
`_greedy.greedy_path` (SOMP). Refinement: coordinate descent, each source in turn moved
by pattern search with the others held (`_common.pattern_search`), which is exact because
J with K−1 columns fixed is the residual after projecting them out minus what the moved
column explains. With K unknown, each K ≤ K_MAX is fitted and the smallest
    BIC(K) = L·M·log J_K + ½·K·(2L + 3)·log(2LM)
wins: 2LM real observations, 3 position and 2L real amplitude parameters per source (σ²,
common to all K, drops out).
"""

from __future__ import annotations

import math

import torch

from riswb.reference.physics.baselines._common import (
    Estimate,
    bounds,
    coded_steering,
    explained,
    first_slots,
    grid_atoms,
    grid_steps,
    in_chunks,
    operators,
    orthonormal_basis,
    pattern_search,
    project_out,
    to_pos,
    to_search,
)
from riswb.reference.physics.baselines._greedy import greedy_path
from riswb.reference.physics.music import MusicGrid
from riswb.reference.physics.presets import Preset

SWEEPS = 3
ITERATIONS = 10  # pattern-search moves per source per sweep


def columns(preset: Preset, g_ops: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """B_l for sources x (B, K, 3) in (φ, θ, 1/r): (B, L, M, K)."""
    return coded_steering(preset, g_ops, x).permute(0, 2, 3, 1)


def residual_energy(y: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Σ_l ‖P⊥_{cols_l} y_l‖² (B,): the concentrated cost J of sources whose columns these are."""
    res = project_out(orthonormal_basis(cols), y.to(torch.complex128))
    return res.abs().square().sum((1, 2))


def dml_cost(preset: Preset, y: torch.Tensor, h: torch.Tensor, codes: torch.Tensor,
             pos: torch.Tensor) -> torch.Tensor:
    """J = Σ_l ‖P⊥_{B_l} y_l‖² (B,) for y (B, L, M) and sources pos (B, K, 3) = (φ, θ, r)."""
    x = to_search(pos).to(torch.float64)
    return residual_energy(y, columns(preset, operators(h, codes), x))


def refine(preset: Preset, g_ops: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
           step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinate pattern search on J from x (B, K, 3) with initial steps (B, K, 3);
    returns the refined x and its J (B,)."""
    lo, hi = bounds(preset)
    y = y.to(torch.complex128)
    x, step = x.clone(), step.clone()
    k = x.shape[1]
    for _ in range(SWEEPS):
        for j in range(k):  # one source at a time, batched over scenes
            others = [i for i in range(k) if i != j]
            q = orthonormal_basis(columns(preset, g_ops, x[:, others]))
            res = project_out(q, y)

            def loss(cand, q=q, res=res):
                return -explained(res, project_out(q, coded_steering(preset, g_ops, cand)))

            x[:, j], step[:, j] = pattern_search(loss, x[:, j], step[:, j], lo, hi, ITERATIONS)
    return x, residual_energy(y, columns(preset, g_ops, x))


def bic(cost: torch.Tensor, k: int, l: int, m: int) -> torch.Tensor:  # noqa: E741
    """BIC of the concentrated deterministic model with k sources (see the module text)."""
    return l * m * torch.log(cost.clamp_min(1e-300)) + 0.5 * k * (2 * l + 3) * math.log(2 * l * m)


def estimate(preset: Preset, y: torch.Tensor, h: torch.Tensor, codes: torch.Tensor,
             k: torch.Tensor | None = None, grid: MusicGrid | None = None,
             chunk: int = 16) -> Estimate:
    """DML estimates for y (B, L, M); K given (k (B,)) or by BIC over 1..K_MAX."""
    grid = grid or MusicGrid.for_preset(preset)
    g_ops = operators(h, codes)
    atoms = grid_atoms(preset, g_ops, grid)
    k_max = preset.k_max

    def run(yc, kc):
        b = len(yc)
        stages = k_max if kc is None else int(kc.max())
        x0, _ = greedy_path(preset, yc, stages, g_ops, atoms, grid, refine_iterations=0)
        step0 = grid_steps(grid).expand(b, stages, 3)
        x = torch.ones(b, k_max, 3, dtype=torch.float64)
        if kc is not None:
            for kk in kc.unique().tolist():  # scenes grouped by their given K
                sel = kc == kk
                x[sel, :kk] = refine(preset, g_ops, yc[sel], x0[sel, :kk], step0[sel, :kk])[0]
            return Estimate.from_slots(to_pos(x), first_slots(kc, k_max))
        fits = [refine(preset, g_ops, yc, x0[:, :kk], step0[:, :kk]) for kk in range(1, k_max + 1)]
        scores = torch.stack([bic(j, kk + 1, preset.l, preset.m) for kk, (_, j) in enumerate(fits)])
        k_hat = scores.argmin(0) + 1
        for kk, (xk, _) in enumerate(fits, start=1):
            x[k_hat == kk, :kk] = xk[k_hat == kk]
        return Estimate.from_slots(to_pos(x), first_slots(k_hat, k_max))

    return in_chunks(run, y, k, chunk)
