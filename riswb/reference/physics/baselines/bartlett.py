"""Coded Bartlett (beamforming) localization with greedy deflation and local refinement.

For the measurement y_l = G_l a(η) s_l + n_l (docs/design.md §7) the spectrum is
    P(η) = Σ_l |g_lᴴ y_l|² / ‖g_l‖²,   g_l = G_l a(η),
the energy a single source at η with a free amplitude per snapshot takes from the data.
Sources are taken one at a time along `_greedy.greedy_path`: the grid maximum of P on the
residual, refined by pattern search, then projected out of every snapshot. With K unknown,
picking stops at the first pick whose residual share fails `_common.count_picks`.
"""

from __future__ import annotations

import torch

from riswb.reference.physics.baselines._common import (
    Estimate,
    count_picks,
    first_slots,
    grid_atoms,
    in_chunks,
    operators,
    to_pos,
)
from riswb.reference.physics.baselines._greedy import greedy_path, grid_spectrum
from riswb.reference.physics.music import MusicGrid
from riswb.reference.physics.presets import Preset

REFINE_ITERATIONS = 20


def bartlett_spectrum(preset: Preset, y: torch.Tensor, h: torch.Tensor, codes: torch.Tensor,
                      grid: MusicGrid | None = None, chunk: int = 16) -> torch.Tensor:
    """P(η) on the grid for every scene: (B, Gφ, Gθ, Gr) float32, scenes in chunks."""
    grid = grid or MusicGrid.for_preset(preset)
    atoms = grid_atoms(preset, operators(h, codes), grid)
    out = [grid_spectrum(y[i:i + chunk], atoms) for i in range(0, len(y), chunk)]
    return torch.cat(out).reshape(len(y), *grid.shape)


def estimate(preset: Preset, y: torch.Tensor, h: torch.Tensor, codes: torch.Tensor,
             k: torch.Tensor | None = None, grid: MusicGrid | None = None,
             chunk: int = 16) -> Estimate:
    """Greedy Bartlett estimates for y (B, L, M); K given (k (B,)) or estimated."""
    grid = grid or MusicGrid.for_preset(preset)
    g_ops = operators(h, codes)
    atoms = grid_atoms(preset, g_ops, grid)

    def run(yc, kc):
        stages = preset.k_max if kc is None else int(kc.max())
        x, share = greedy_path(preset, yc, stages, g_ops, atoms, grid, REFINE_ITERATIONS)
        x = torch.cat([x, x.new_ones(len(yc), preset.k_max - stages, 3)], 1)
        kk = count_picks(share, preset.m) if kc is None else kc
        return Estimate.from_slots(to_pos(x), first_slots(kk, preset.k_max))

    return in_chunks(run, y, k, chunk)
