"""Any covariance through the package's MUSIC (`riswb/reference/physics/music.py`) as an
`Estimate`: the shared back end of the `samp`, `true` and `pred` rows."""

from __future__ import annotations

import torch

from riswb.reference.physics.baselines._common import Estimate
from riswb.reference.physics.music import music_localize
from riswb.reference.physics.order import descending_eigvals, estimate_k_gap
from riswb.reference.physics.presets import Preset


def music_estimate(preset: Preset, r: torch.Tensor, k: torch.Tensor | None = None) -> Estimate:
    """MUSIC on R (B, N, N) with K given (k (B,)) or from R's eigen-gap."""
    if k is None:
        k = estimate_k_gap(descending_eigvals(r), preset.k_max)
    loc = music_localize(r, k, preset)
    return Estimate.from_slots(torch.stack([loc.phi, loc.theta, loc.r], -1), loc.mask)
