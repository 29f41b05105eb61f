"""The prior's guess: every source at the centre of the field of view.

With K unknown it guesses the median of the uniform source-count prior (K ~ U{1..K_MAX},
`riswb/reference/physics/scenes.py`). A row that no estimator should lose to.
"""

from __future__ import annotations

import torch

from riswb.reference.physics.baselines._common import Estimate, first_slots
from riswb.reference.physics.presets import Preset


def estimate(preset: Preset, n_scenes: int, k: torch.Tensor | None = None) -> Estimate:
    """(n_scenes) copies of the field-of-view centre in the first k (or median K) slots."""
    centre = torch.tensor([sum(preset.phi_range) / 2, sum(preset.theta_range) / 2,
                           sum(preset.r_range) / 2], dtype=torch.float64)
    if k is None:
        k = torch.full((n_scenes,), (preset.k_max + 1) // 2, dtype=torch.long)
    pos = centre.expand(n_scenes, preset.k_max, 3)
    return Estimate.from_slots(pos, first_slots(k, preset.k_max))
