"""spectrum-mismatch: R_pred's eigen-spectrum disagrees with R_true's.

Reads kind `spectrum` at the last evaluation (`scale_ratio` = tr R_pred / tr R_true,
`eff_rank_pred`/`eff_rank_true`, `gap_pred`/`gap_true`: relative eigengap at K,
`top_k_energy_*`). Without it, falls back on spectra.jsonl (`R_pred`/`R_true` mean
eigenvalues) for scale and effective rank.
"""

from __future__ import annotations

import numpy as np

from riswb.diagnose.frames import col
from riswb.diagnose.rules._base import Finding, Thresholds
from riswb.diagnose.rules._util import Unchecked, frame_of, steps_of
from riswb.diagnose.text import fmt

ID = "spectrum-mismatch"


def _eff_rank(values: np.ndarray) -> float:
    v = np.clip(np.asarray(values, dtype=float), 0, None)
    total = v.sum()
    if total <= 0:
        return float("nan")
    p = v[v > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def _latest(run) -> tuple[dict, dict | None]:
    """Metrics at the last evaluation (and the first, for the trend)."""
    spec = frame_of(run, "spectrum")
    keys = ("scale_ratio", "eff_rank_pred", "eff_rank_true", "gap_pred", "gap_true",
            "top_k_energy_pred", "top_k_energy_true")
    if not spec.empty:
        steps = steps_of(spec)
        rows = {k: col(spec, k) for k in keys}

        def at(i: int) -> dict:
            out = {"step": int(steps[i])}
            out.update({k: float(v[i]) for k, v in rows.items() if np.isfinite(v[i])})
            return out

        return at(len(spec) - 1), (at(0) if len(spec) > 1 else None)
    spectra = run.spectra
    if spectra.empty or "name" not in spectra.columns:
        raise Unchecked("no `spectrum` records and no spectra: wb.evaluate() was not given "
                        "R_pred and R_true")
    pred = spectra[spectra["name"] == "R_pred"]
    true = spectra[spectra["name"] == "R_true"]
    common = sorted(set(pred["step"]) & set(true["step"]))
    if not common:
        raise Unchecked("spectra hold no R_pred/R_true pair at the same step")

    def at_step(step) -> dict:
        p = np.asarray(pred[pred["step"] == step]["values"].iloc[-1], dtype=float)
        t = np.asarray(true[true["step"] == step]["values"].iloc[-1], dtype=float)
        out = {"step": int(step), "eff_rank_pred": _eff_rank(p), "eff_rank_true": _eff_rank(t)}
        if t.sum() > 0:
            out["scale_ratio"] = float(p.sum() / t.sum())
        return out

    return at_step(common[-1]), (at_step(common[0]) if len(common) > 1 else None)


def check(run, th: Thresholds) -> list[Finding]:
    last, first = _latest(run)
    problems: list[tuple[str, str, str]] = []  # (severity, what, fix)
    scale = last.get("scale_ratio")
    if scale is not None:
        off = max(scale, 1 / scale) if scale > 0 else float("inf")
        if off >= th.scale_ratio_max or off >= th.scale_ratio_warn:
            problems.append((
                "error" if off >= th.scale_ratio_max else "warning",
                f"scale off by {fmt(off)}× (tr R_pred / tr R_true = {fmt(scale)})",
                "Trace-normalize every covariance to N before the loss and before MUSIC "
                "(an R_samp that was not normalized sat at ‖3e-4‖ against ‖R_blend‖ = 3.5e12 "
                "and drove the loss to 1.7e25)."))
    rp, rt = last.get("eff_rank_pred"), last.get("eff_rank_true")
    if rp is not None and rt is not None and rt > 0:
        rank_ratio = rp / rt
        if rank_ratio >= th.flat_rank_ratio:
            problems.append((
                "warning",
                f"flat: effective rank {fmt(rp)} vs {fmt(rt)} for R_true",
                "R_pred spreads its energy evenly (close to a scaled identity): MUSIC sees no "
                "signal subspace. Check the gap/margin terms send a gradient (dead-loss-term) "
                "and keep eigenvalue order explicitly descending (an ascending order made the "
                "eigengap hinge push the wrong gap)."))
        elif rank_ratio <= th.collapsed_rank_ratio:
            # a collapsed R_pred cannot resolve the sources however low the loss goes
            problems.append((
                "error",
                f"collapsed: effective rank {fmt(rp)} vs {fmt(rt)} for R_true",
                "R_pred concentrates in fewer directions than there are sources: the factor's "
                "columns align. Check the ortho term's weight and that the factor has K_MAX "
                "columns."))
    gp, gt = last.get("gap_pred"), last.get("gap_true")
    if gp is not None and gt is not None and gt > 0 and gp < th.min_gap_fraction * gt:
        problems.append((
            "warning",
            f"no gap at K: relative eigengap {fmt(gp)} vs {fmt(gt)} for R_true",
            "Without an eigengap at K, the signal/noise split that MUSIC needs is arbitrary: "
            "check the gap term (descending singular values, gap ≈ 0 at R_true) and its "
            "weight."))
    if not problems:
        return []
    severity = "error" if any(p[0] == "error" for p in problems) else "warning"
    evidence = {"last_eval": last, "problems": [p[1] for p in problems]}
    if first is not None:
        evidence["first_eval"] = first
    return [Finding(
        ID, severity,
        f"R_pred's spectrum disagrees with R_true's at step {last['step']}: "
        + "; ".join(p[1] for p in problems),
        evidence,
        " ".join(dict.fromkeys(p[2] for p in problems)),
    )]
