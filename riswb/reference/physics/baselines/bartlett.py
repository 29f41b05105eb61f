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
    grid_atoms,
    operators,
)
from riswb.reference.physics.baselines._greedy import greedy_estimate, grid_spectrum
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
    return greedy_estimate(preset, y, h, codes, k, grid, chunk, refine_iterations=REFINE_ITERATIONS)
