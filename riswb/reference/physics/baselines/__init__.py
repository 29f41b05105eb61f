"""Localization baselines from the coded measurements (y, H, codes), one per module, all
returning an `Estimate` (B, K_MAX, 3) with K given or estimated (docs/design.md §7):

prior     every source at the field-of-view centre (no data)
random    uniform guesses (no data, seeded)
samp      MUSIC on R_samp, the back-projection covariance
bartlett  coded beamforming, greedy deflation, refined picks
sparse    SOMP over per-snapshot dictionaries, on the grid
dml       deterministic maximum likelihood, K by BIC
true      oracle: MUSIC on the noise-free R_true, the grid/refinement numerical floor

`run_estimator` calls any of them on a SceneBatch; only `true` reads more than
(y, H, codes).
"""

from __future__ import annotations

import torch

from riswb.reference.physics.baselines import (
    bartlett,
    dml,
    prior,
    random_guess,
    samp,
    sparse,
    true,
)
from riswb.reference.physics.baselines._common import Estimate
from riswb.reference.physics.presets import Preset
from riswb.reference.physics.scenes import SceneBatch

ESTIMATORS = ("prior", "random", "samp", "bartlett", "sparse", "dml", "true")
LABELS = {"true": "true (oracle R_true: numerical floor)"}


def run_estimator(name: str, preset: Preset, batch: SceneBatch, k: torch.Tensor | None = None,
                  seed: int = 0) -> Estimate:
    """Estimator `name` on `batch`, with K given (k (B,)) or estimated (None)."""
    if name == "prior":
        return prior.estimate(preset, len(batch), k)
    if name == "random":
        return random_guess.estimate(preset, len(batch), k, seed)
    if name == "true":
        return true.estimate(preset, batch.R_true, k)
    modules = {"samp": samp, "bartlett": bartlett, "sparse": sparse, "dml": dml}
    if name not in modules:
        raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
    return modules[name].estimate(preset, batch.y, batch.H, batch.codes, k)
