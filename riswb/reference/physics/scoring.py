"""The two-score localization yardstick; the two scores are never mixed.

(a) K given. Per scene, truths and estimates are Hungarian-matched on the span-normalized
    squared distance (`metrics.match_sources`); the scene's error per coordinate is the RMS
    over its matched sources. `rmse` = √(mean over scenes of the scene's mean squared
    error), `median` = median over scenes of the scene's RMS error, in degrees and metres.
    Unmatched truths and estimates are left out here: they are GOSPA's business. √CRB
    (`crb.near_field_crb`) is summarized the same way beside it, and flagged uninformative
    per coordinate where it exceeds the prior's own spread, span/√12 (the std of a
    uniform over the field of view): there the bound says the data can teach nothing.
(b) K estimated. GOSPA of order p = 2 with α = 2 on one joint normalized distance
    d(x, y) = ‖(x − y)/c‖₂, c = (c_φ, c_θ, c_r) the per-coordinate cut-offs, capped at 1:
        GOSPA² = min over assignments Σ_assigned d² + ½·(misses + false alarms).
    A joint distance (not three per-coordinate GOSPAs) keeps one assignment per scene, so
    a source is detected as a whole. Default c: the preset's minimum source separation in
    φ and θ (a farther estimate could belong to a neighbour) and half the range span in r
    (range resolves far worse than angle). Also: detection rate (assigned truths / truths),
    false-alarm rate (unassigned estimates / estimates), K accuracy.

`evaluate_estimators` runs the baselines of `riswb/reference/physics/baselines/` and a
trained model's rows (`aux`: its aux head; `pred`: MUSIC on its R_pred), in the order
asked for, on one seeded scene set and returns both scores per row.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from riswb.reference.physics.baselines import LABELS, run_estimator
from riswb.reference.physics.baselines._common import Estimate, first_slots
from riswb.reference.physics.baselines.music_row import music_estimate
from riswb.reference.physics.crb import near_field_crb
from riswb.reference.physics.metrics import match_sources, spans, to_edge
from riswb.reference.physics.presets import Preset, get_preset
from riswb.reference.physics.scenes import SceneBatch, simulate_scenes

K_MODES = ("true", "est")
MODEL_ROWS = ("aux", "pred")
# every row name, in the order `riswb eval` lists them: the oracle floor last
ROWS = ("prior", "random", "samp", "bartlett", "dml", "sparse", *MODEL_ROWS, "true")
ROW_LABELS = {**LABELS, "aux": "aux (the model's aux head)", "pred": "pred (MUSIC on R_pred)"}


def prior_std(preset: Preset) -> np.ndarray:
    """Std of a uniform over the field of view per coordinate: span/√12."""
    return spans(preset) / math.sqrt(12)


def gospa_cutoff(preset: Preset) -> np.ndarray:
    """Default cut-offs (c_φ rad, c_θ rad, c_r m); see the module text."""
    return np.array([preset.min_separation, preset.min_separation,
                     (preset.r_range[1] - preset.r_range[0]) / 2])


@dataclasses.dataclass
class Gospa:
    """Per-scene GOSPA values and counts (B,)."""

    value: np.ndarray
    assigned: np.ndarray
    missed: np.ndarray
    false: np.ndarray


def gospa(true_pos, true_mask, est_pos, est_mask, cutoff, p: float = 2.0) -> Gospa:
    """GOSPA (α = 2, cut-off 1 on the c-normalized distance) per scene; positions (B, K, 3)."""
    true_pos, est_pos = np.asarray(true_pos, float), np.asarray(est_pos, float)
    true_mask, est_mask = np.asarray(true_mask, bool), np.asarray(est_mask, bool)
    b = true_pos.shape[0]
    out = Gospa(*(np.zeros(b) for _ in range(4)))
    for i in range(b):  # scipy's assignment works one matrix at a time
        t, e = true_pos[i][true_mask[i]], est_pos[i][est_mask[i]]
        loc, hits = 0.0, 0
        if len(t) and len(e):
            d = np.sqrt((((t[:, None] - e[None]) / cutoff) ** 2).sum(-1))
            # capped costs: a pair at d ≥ 1 costs 1 = ½ miss + ½ false alarm, so a full
            # rectangular assignment on min(d, 1)^p is also the best partial one
            rows, cols = linear_sum_assignment(np.minimum(d, 1.0) ** p)
            close = d[rows, cols] < 1.0
            loc, hits = float((d[rows, cols][close] ** p).sum()), int(close.sum())
        out.assigned[i], out.missed[i], out.false[i] = hits, len(t) - hits, len(e) - hits
        out.value[i] = (loc + 0.5 * (len(t) + len(e) - 2 * hits)) ** (1 / p)
    return out


def k_given_scores(true_pos, true_mask, est_pos, est_mask, span) -> dict:
    """Score (a): {"rmse", "median"} in degrees/metres over scenes with a matched source,
    and "scenes_scored"."""
    true_mask = np.asarray(true_mask, bool)
    m = match_sources(true_pos, true_mask, est_pos, est_mask, span)
    scene = np.repeat(np.arange(true_mask.shape[0]), true_mask.sum(1))[m.matched]
    err2 = m.errors[m.matched] ** 2
    n = np.bincount(scene, minlength=true_mask.shape[0])
    scored = n > 0
    per = np.stack([np.bincount(scene, err2[:, c], minlength=len(n)) for c in range(3)], 1)
    per = per[scored] / n[scored, None]
    if not scored.any():
        nan = [math.nan] * 3
        return {"rmse": to_edge(nan), "median": to_edge(nan), "scenes_scored": 0}
    return {"rmse": to_edge(np.sqrt(per.mean(0))), "median": to_edge(np.median(np.sqrt(per), 0)),
            "scenes_scored": int(scored.sum())}


def crb_scores(preset: Preset, batch: SceneBatch) -> dict:
    """√CRB per scene (RMS over its sources), as mean (√ of the mean CRB) and median over
    scenes, beside the prior's spread and the uninformative flags."""
    bound = near_field_crb(preset, batch.H, batch.codes, batch.phi, batch.theta, batch.r,
                           batch.power, batch.mask, batch.noise_var).numpy()
    per = np.nanmean(bound**2, 1)  # (B, 3): the scene's mean CRB, empty slots are NaN
    std = prior_std(preset)
    mean, median = np.sqrt(per.mean(0)), np.median(np.sqrt(per), 0)
    return {"mean": to_edge(mean), "median": to_edge(median), "prior_std": to_edge(std),
            "uninformative": dict(zip(to_edge(std), (mean > std).tolist(), strict=True)),
            "uninformative_share": dict(zip(to_edge(std), (np.sqrt(per) > std).mean(0).tolist(),
                                            strict=True))}


def score_row(name: str, est: Estimate, batch: SceneBatch, preset: Preset, k_mode: str,
              cutoff: np.ndarray, seconds: float) -> dict:
    """One contract row: score (a) in k_mode "true" (None in "est"), score (b) always."""
    truth = torch.stack([batch.phi, batch.theta, batch.r], -1).numpy()
    pos, mask, true_mask = est.pos.numpy(), est.mask.numpy(), batch.mask.numpy()
    g = gospa(truth, true_mask, pos, mask, cutoff)
    given = (k_given_scores(truth, true_mask, pos, mask, spans(preset))
             if k_mode == "true" else {"rmse": None, "median": None, "scenes_scored": None})
    n_est = int(mask.sum())
    return {"estimator": name, "label": ROW_LABELS.get(name, name), **given,
            "gospa": float(g.value.mean()),
            "detection_rate": float(g.assigned.sum() / true_mask.sum()),
            "false_alarm_rate": float(g.false.sum() / n_est) if n_est else 0.0,
            "k_accuracy": float((est.k == batch.k).float().mean()),
            "seconds_per_scene": seconds / len(batch)}


def default_rows(with_model: bool) -> list[str]:
    """Every row that applies: the baselines, and the model's rows when there is a model."""
    return [name for name in ROWS if with_model or name not in MODEL_ROWS]


def _model_rows(predict, preset, batch, k) -> dict[str, tuple[Estimate, float]]:
    """{"aux", "pred"} -> (Estimate, seconds): the model's aux head and MUSIC on its R_pred
    with K given (k) or the model's own k_est."""
    t0 = time.perf_counter()
    r_pred, k_est, aux = predict(batch)
    t_predict = time.perf_counter() - t0
    k = k if k is not None else k_est.cpu()
    rows = {}
    if aux is not None:  # its loss puts the sources in the first k slots (losses.aux)
        rows["aux"] = (Estimate.from_slots(aux.detach().cpu(), first_slots(k, preset.k_max)),
                       t_predict)
    t0 = time.perf_counter()
    pred = music_estimate(preset, r_pred.detach().cpu(), k)
    rows["pred"] = pred, t_predict + time.perf_counter() - t0
    return rows


def evaluate_estimators(preset: Preset | str, *, snr_db: float | None, scenes: int, seed: int,
                        deployment_seed: int | None = None, k_mode: str = "true",
                        estimators: list[str] | tuple[str, ...] | None = None,
                        predict: Callable | None = None,
                        cutoff: np.ndarray | None = None) -> dict:
    """Both scores for each estimator on `scenes` scenes (seed `seed`) at `snr_db` (None:
    the preset's default), one row per name of `estimators` in its order (None: every row
    that applies, `default_rows`).

    deployment_seed draws another (H, codes) than the preset's own (None keeps it):
    `simulate_scenes` takes the deployment from `preset.deploy_seed`, so a copy of the
    preset with that seed changed varies the deployment independently of the scenes.
    predict(batch) -> (R_pred (B, N, N), k_est (B,), aux (B, K_MAX, 3) or None) makes the
    rows `aux` and `pred` (MUSIC on R_pred with K given or the model's k_est) possible; it
    is refused on another deployment, which the model, trained with (H, codes) as constants
    (docs/internals.md §1), has never seen."""
    if k_mode not in K_MODES:
        raise ValueError(f"k_mode must be one of {K_MODES}, got {k_mode!r}")
    estimators = default_rows(predict is not None) if estimators is None else list(estimators)
    unknown = [e for e in estimators if e not in ROWS]
    if unknown:
        raise ValueError(f"unknown estimators {unknown}; choose from {', '.join(ROWS)}")
    if predict is None and any(e in MODEL_ROWS for e in estimators):
        raise ValueError(f"rows {', '.join(MODEL_ROWS)} need a model (predict)")
    preset = get_preset(preset)
    if deployment_seed is not None and deployment_seed != preset.deploy_seed:
        if predict is not None:
            raise ValueError("predict needs the preset's own deployment "
                             f"(deploy_seed {preset.deploy_seed}), got {deployment_seed}")
        preset = dataclasses.replace(preset, deploy_seed=deployment_seed)
    cutoff = gospa_cutoff(preset) if cutoff is None else np.asarray(cutoff, float)
    snr_db = preset.snr_db if snr_db is None else snr_db
    batch = simulate_scenes(preset, scenes, seed=seed, snr_db=snr_db)
    k = batch.k if k_mode == "true" else None
    model_rows = None  # the model runs once, for whichever of its rows come first
    rows = []
    for name in estimators:
        if name in MODEL_ROWS:
            model_rows = model_rows or _model_rows(predict, preset, batch, k)
            if name not in model_rows:
                raise ValueError(f"predict returned no {name} output")
            est, seconds = model_rows[name]
        else:
            t0 = time.perf_counter()
            est = run_estimator(name, preset, batch, k, seed)
            seconds = time.perf_counter() - t0
        rows.append(score_row(name, est, batch, preset, k_mode, cutoff, seconds))
    return {"preset": preset.name, "deployment_seed": preset.deploy_seed, "seed": seed,
            "snr_db": float(snr_db), "scenes": scenes, "k_mode": k_mode,
            "gospa_cutoff": to_edge(cutoff), "crb": crb_scores(preset, batch), "rows": rows}
