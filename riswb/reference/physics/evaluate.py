"""Localization evaluation: MUSIC on a covariance, Hungarian RMSE with misses, K accuracy,
covariance NMSE, and the CRB side by side.

The CRB column is √(mean over true sources of CRB), the bound's counterpart of an RMSE
over the same sources (no misses, so it is also the bound for `rmse_matched`).
"""

from __future__ import annotations

import torch

from riswb.reference.physics.covariance import nmse
from riswb.reference.physics.crb import near_field_crb
from riswb.reference.physics.metrics import (
    k_accuracy,
    localization_summary,
    match_sources,
    spans,
    to_edge,
)
from riswb.reference.physics.music import Localization, MusicGrid, music_localize
from riswb.reference.physics.order import descending_eigvals, estimate_k_gap
from riswb.reference.physics.presets import Preset
from riswb.reference.physics.scenes import SceneBatch

K_MODES = ("est", "true")


def localize(preset: Preset, batch: SceneBatch, r: torch.Tensor, k_mode: str = "est",
             grid: MusicGrid | None = None) -> tuple[Localization, torch.Tensor]:
    """MUSIC on R with K estimated by the eigen-gap rule ("est") or given ("true");
    returns the localization and the estimated K (B,)."""
    if k_mode not in K_MODES:
        raise ValueError(f"k_mode must be one of {K_MODES}, got {k_mode!r}")
    k_est = estimate_k_gap(descending_eigvals(r), preset.k_max)
    return music_localize(r, batch.k if k_mode == "true" else k_est, preset, grid), k_est


def crb_rms(preset: Preset, batch: SceneBatch) -> dict:
    """√(mean CRB) over all true sources, in degrees and metres."""
    bound = near_field_crb(preset, batch.H, batch.codes, batch.phi, batch.theta, batch.r,
                           batch.power, batch.mask, batch.noise_var)
    return to_edge(bound[batch.mask].square().mean(0).sqrt().tolist())


def _stack(*coords: torch.Tensor):
    return torch.stack(coords, -1).cpu().numpy()


def evaluate_localization(preset: Preset, batch: SceneBatch, r: torch.Tensor,
                          k_mode: str = "est", grid: MusicGrid | None = None) -> dict:
    """Summary dict: scenes, snr_db, k_mode, rmse, rmse_matched, n_sources, n_missed,
    n_false, crb, k_accuracy, nmse (mean ‖R − R_true‖²/‖R_true‖²)."""
    loc, k_est = localize(preset, batch, r, k_mode, grid)
    matching = match_sources(_stack(batch.phi, batch.theta, batch.r), batch.mask.cpu().numpy(),
                             _stack(loc.phi, loc.theta, loc.r), loc.mask.cpu().numpy(),
                             spans(preset))
    snr = batch.snr_db.unique()
    return {
        "scenes": len(batch),
        "snr_db": float(snr[0]) if len(snr) == 1 else float(batch.snr_db.mean()),
        "k_mode": k_mode,
        **localization_summary(matching),
        "crb": crb_rms(preset, batch),
        "k_accuracy": k_accuracy(k_est, batch.k),
        "nmse": float(nmse(r, batch.R_true).mean()),
    }

