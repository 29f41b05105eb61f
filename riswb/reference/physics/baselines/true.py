"""Oracle: MUSIC on the noise-free R_true (`riswb/reference/physics/scenes.py`).

Not an estimator from data: it sees the true covariance, so its errors are the numerical
floor of the grid, peak picking and refinement, not of the measurements.
"""

from __future__ import annotations

import torch

from riswb.reference.physics.baselines._common import Estimate
from riswb.reference.physics.baselines.music_row import music_estimate
from riswb.reference.physics.presets import Preset


def estimate(preset: Preset, r_true: torch.Tensor, k: torch.Tensor | None = None) -> Estimate:
    """MUSIC on R_true with K given (k (B,)) or from its eigen-gap (exact: rank K)."""
    return music_estimate(preset, r_true, k)
