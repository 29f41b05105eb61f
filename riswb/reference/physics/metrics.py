"""Hungarian-matched localization errors with explicit misses.

Per scene, true and estimated sources are matched by scipy's linear_sum_assignment on the
normalized squared distance (Δφ/span_φ)² + (Δθ/span_θ)² + (Δr/span_r)², spans being the
preset's field-of-view widths. Every true source gets one error per coordinate:
  matched  → |estimate − truth|
  missed   → the full span (the largest error any in-view estimate can have),
so a consumer that averages over all truths never lets a miss flatter it (docs/failures.md
#25); `scoring.k_given_scores` averages the matched ones and leaves misses to GOSPA.
Unmatched estimates are false alarms: counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from riswb.reference.physics.presets import Preset


@dataclass
class Matching:
    """Per true-source errors (S, 3) = (φ rad, θ rad, r m), whether each was matched (S,),
    and the false-alarm count."""

    errors: np.ndarray
    matched: np.ndarray
    n_false: int


def spans(preset: Preset) -> np.ndarray:
    """Field-of-view widths (span_φ, span_θ, span_r)."""
    return np.array([preset.phi_range[1] - preset.phi_range[0],
                     preset.theta_range[1] - preset.theta_range[0],
                     preset.r_range[1] - preset.r_range[0]])


def match_sources(true_pos: np.ndarray, true_mask: np.ndarray, est_pos: np.ndarray,
                  est_mask: np.ndarray, span: np.ndarray) -> Matching:
    """Match per scene; positions (B, K, 3) as (φ, θ, r), masks (B, K) bool."""
    true_pos, est_pos = np.asarray(true_pos, float), np.asarray(est_pos, float)
    true_mask, est_mask = np.asarray(true_mask, bool), np.asarray(est_mask, bool)
    errors, matched, n_false = [], [], 0
    for b in range(true_pos.shape[0]):  # scipy's assignment works one matrix at a time
        t, e = true_pos[b][true_mask[b]], est_pos[b][est_mask[b]]
        err = np.tile(span, (len(t), 1))
        hit = np.zeros(len(t), bool)
        if len(t) and len(e):
            cost = (((t[:, None, :] - e[None, :, :]) / span) ** 2).sum(-1)
            rows, cols = linear_sum_assignment(cost)
            err[rows] = np.abs(t[rows] - e[cols])
            hit[rows] = True
        n_false += len(e) - int(hit.sum())
        errors.append(err)
        matched.append(hit)
    return Matching(np.concatenate(errors) if errors else np.zeros((0, 3)),
                    np.concatenate(matched) if matched else np.zeros(0, bool), n_false)


def to_edge(v) -> dict:
    """(φ rad, θ rad, r m) → {"phi_deg", "theta_deg", "r_m"} floats."""
    return {"phi_deg": math.degrees(v[0]), "theta_deg": math.degrees(v[1]), "r_m": float(v[2])}
