"""The greedy joint-deflation path shared by SOMP, Bartlett and DML's initialization.

Stage j correlates the residual with the per-snapshot dictionaries G_l A_grid (the Bartlett
spectrum of the residual, `grid_spectrum`), takes the grid maximum away from earlier picks,
optionally refines it in continuous (φ, θ, 1/r), and removes the span of all picks so far
from every snapshot: res_l = P⊥_{[g_l(η_1) … g_l(η_j)]} y_l, the least-squares residual with
free per-snapshot amplitudes (docs/design.md §7: s_l is fresh per snapshot). Refinement
minimizes exactly that residual over the new pick, earlier picks held: it maximizes
Σ_l |ĝ_lᴴ res_l|²/‖ĝ_l‖² with ĝ_l the new column with the earlier ones projected out.
"""

from __future__ import annotations

import torch

from riswb.reference.physics.baselines._common import (
    Estimate,
    bounds,
    coded_steering,
    count_picks,
    explained,
    first_slots,
    grid_atoms,
    grid_coords,
    grid_steps,
    in_chunks,
    operators,
    orthonormal_basis,
    pattern_search,
    project_out,
    suppress_near,
    to_pos,
    unit_directions,
)
from riswb.reference.physics.music import MusicGrid
from riswb.reference.physics.presets import Preset


def grid_spectrum(res: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """Σ_l |d_lᴴ res_l|² for unit-norm atoms (L, M, G) and residuals res (B, L, M) → (B, G)."""
    z = torch.matmul(res.to(atoms.dtype).transpose(0, 1), atoms.conj())  # (L, B, G)
    return z.abs().square().sum(0)


def greedy_path(preset: Preset, y: torch.Tensor, stages: int, g_ops: torch.Tensor,
                atoms: torch.Tensor, grid: MusicGrid,
                refine_iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Picks x (B, stages, 3) in (φ, θ, 1/r) and the share of the residual energy each
    removed (B, stages), for y (B, L, M); no refinement when refine_iterations is 0."""
    b = len(y)
    coords = grid_coords(grid)
    grid_u = unit_directions(coords)
    lo, hi = bounds(preset)
    step0 = grid_steps(grid).expand(b, 3)
    res = y.to(torch.complex128)
    q = torch.zeros(*res.shape, 0, dtype=res.dtype)  # (B, L, M, j) basis of the picks
    picks = torch.zeros(b, stages, 3, dtype=torch.float64)
    share = torch.zeros(b, stages, dtype=torch.float64)
    for j in range(stages):  # one source per stage, batched over scenes
        score = suppress_near(grid_spectrum(res, atoms), grid_u,
                              unit_directions(picks[:, :j]), 0.5 * preset.min_separation)
        x = coords[score.argmax(-1)]

        def loss(cand, q=q, res=res):
            return -explained(res, project_out(q, coded_steering(preset, g_ops, cand)))

        if refine_iterations:
            x, _ = pattern_search(loss, x, step0, lo, hi, refine_iterations)
        energy = res.abs().square().sum((1, 2)).clamp_min(1e-300)
        share[:, j] = -loss(x[:, None])[:, 0] / energy
        picks[:, j] = x
        q = orthonormal_basis(torch.cat([q, coded_steering(preset, g_ops, x)[..., None]], -1))
        res = project_out(q, y.to(torch.complex128))
    return picks, share


def greedy_estimate(preset: Preset, y: torch.Tensor, h: torch.Tensor, codes: torch.Tensor,
                    k: torch.Tensor | None, grid: MusicGrid | None, chunk: int,
                    refine_iterations: int) -> Estimate:
    """Estimates read off the greedy path (Bartlett with refinement, SOMP without): K given
    (k (B,)) or counted from the residual share each pick explains."""
    grid = grid or MusicGrid.for_preset(preset)
    g_ops = operators(h, codes)
    atoms = grid_atoms(preset, g_ops, grid)

    def run(yc, kc):
        stages = preset.k_max if kc is None else int(kc.max())
        x, share = greedy_path(preset, yc, stages, g_ops, atoms, grid, refine_iterations)
        x = torch.cat([x, x.new_ones(len(yc), preset.k_max - stages, 3)], 1)
        kk = count_picks(share, preset.m) if kc is None else kc
        return Estimate.from_slots(to_pos(x), first_slots(kk, preset.k_max))

    return in_chunks(run, y, k, chunk)
