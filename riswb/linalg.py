"""Linear-algebra helpers shared by the probes and the reference pipeline."""

from __future__ import annotations

import torch


def hermitize(r: torch.Tensor) -> torch.Tensor:
    """(R + Rᴴ)/2: the Hermitian part, taken before any eigen-decomposition."""
    return 0.5 * (r + r.mH)
