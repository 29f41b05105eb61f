"""MUSIC on R_samp, the regularized back-projection covariance of (y, H, codes)
(`riswb/reference/physics/covariance.py`), with K given or from its eigen-gap."""

from __future__ import annotations

import torch

from riswb.reference.physics.baselines._common import Estimate
from riswb.reference.physics.baselines.music_row import music_estimate
from riswb.reference.physics.covariance import backprojection_covariance
from riswb.reference.physics.presets import Preset


def estimate(preset: Preset, y: torch.Tensor, h: torch.Tensor, codes: torch.Tensor,
             k: torch.Tensor | None = None) -> Estimate:
    """MUSIC estimates from R_samp(y, H, codes); K given (k (B,)) or eigen-gap."""
    return music_estimate(preset, backprojection_covariance(y, h, codes), k)
