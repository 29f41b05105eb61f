"""Simultaneous OMP (SOMP): joint-support sparse recovery over per-snapshot dictionaries.

Snapshot l sees y_l = D_l x_l + n_l with D_l = G_l A_grid (M × G, docs/design.md §7) and
x_l sharing one support (the sources) across snapshots while its values change (s_l is
fresh per snapshot). Each stage adds the atom with the largest Σ_l |d_lᴴ res_l|²/‖d_l‖² and
re-fits all selected atoms by per-snapshot least squares (`_greedy.greedy_path` without
refinement), so estimates stay on the grid: its errors floor at the grid spacing over √12.
K is given or set by the residual threshold of `_common.count_picks`.
"""

from __future__ import annotations

import torch

from riswb.reference.physics.baselines._common import Estimate
from riswb.reference.physics.baselines._greedy import greedy_estimate
from riswb.reference.physics.music import MusicGrid
from riswb.reference.physics.presets import Preset


def estimate(preset: Preset, y: torch.Tensor, h: torch.Tensor, codes: torch.Tensor,
             k: torch.Tensor | None = None, grid: MusicGrid | None = None,
             chunk: int = 16) -> Estimate:
    """SOMP estimates for y (B, L, M); K given (k (B,)) or by the residual threshold."""
    return greedy_estimate(preset, y, h, codes, k, grid, chunk, refine_iterations=0)
