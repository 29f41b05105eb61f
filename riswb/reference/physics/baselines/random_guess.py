"""Uniform random guesses over the field of view (seeded): the chance level.

Positions are drawn uniformly in φ, θ and r; with K unknown, K ~ U{1..K_MAX}, the
simulator's own prior (`riswb/reference/physics/scenes.py`).
"""

from __future__ import annotations

import torch

from riswb.reference.physics.baselines._common import Estimate, first_slots
from riswb.reference.physics.presets import Preset


def estimate(preset: Preset, n_scenes: int, k: torch.Tensor | None = None,
             seed: int = 0) -> Estimate:
    """Uniform guesses in the first k (or random K) slots of n_scenes scenes."""
    gen = torch.Generator().manual_seed(seed)
    lo = torch.tensor([preset.phi_range[0], preset.theta_range[0], preset.r_range[0]],
                      dtype=torch.float64)
    hi = torch.tensor([preset.phi_range[1], preset.theta_range[1], preset.r_range[1]],
                      dtype=torch.float64)
    pos = lo + (hi - lo) * torch.rand(n_scenes, preset.k_max, 3, generator=gen,
                                      dtype=torch.float64)
    if k is None:
        k = torch.randint(1, preset.k_max + 1, (n_scenes,), generator=gen)
    return Estimate.from_slots(pos, first_slots(k, preset.k_max))
