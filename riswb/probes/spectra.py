"""Eigen-spectra of the predicted and true covariances at evaluation (kind `spectrum`).

At EVAL, when `wb.evaluate(..., R_pred=, R_true=, K=)` passes matrices (B, N, N) or (N, N),
real symmetric or complex Hermitian: each is hermitized ((R + Rᴴ)/2), decomposed with one
batched `eigvalsh` in float64/complex128 (no per-sample loop), and its eigenvalues sorted
descending. `R_samp`, when the payload or the metrics dict carries it, is decomposed too.

spectra.jsonl: {"step", "name": "R_pred"|"R_true"|"R_samp", "values": mean over the batch of
the descending eigenvalues}.

Record `spectrum` (means over the batch; keys only for the matrices given):

* `eff_rank_pred/true` — entropy effective rank exp(−Σ pᵢ log pᵢ), pᵢ = λᵢ⁺/Σλ⁺ (λ⁺ = max(λ, 0));
* `gap_pred/true`      — relative eigengap at K: (λ⁺_K − λ⁺_{K+1}) / λ⁺_1 (1-based, λ_{N+1} = 0;
  λ_K/λ_1 for an exact rank-K matrix, ≈ 0 when there is no gap at K);
* `top_k_energy_pred/true` — Σ_{i≤K} λ⁺ᵢ / Σ λ⁺ᵢ;
* `scale_ratio`        — Σ_b tr R_pred / Σ_b tr R_true (a ratio of batch means, so a zero
  R_true in one sample cannot make it infinite).

An all-zero (or all-negative) spectrum has no effective rank: such samples are left out of
the `eff_rank` means.

K is an int or a per-sample tensor (B,); samples with K = 0 are left out of the gap and
energy means. Without K the probe infers it per sample from R_true (eigenvalues above
1e-4·λ_max); with neither, the K-dependent keys are omitted. Eval is not a per-step event,
so the record is written at once.
"""

from __future__ import annotations

from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.linalg import hermitize

RANK_TOL = 1e-4


def descending_eigvals(R: torch.Tensor) -> torch.Tensor:
    """(B, N) float64 eigenvalues of the Hermitian part of R (B, N, N) or (N, N), descending."""
    R = R.detach()
    if R.ndim == 2:
        R = R.unsqueeze(0)
    R = R.to(torch.complex128 if R.is_complex() else torch.float64)
    return torch.linalg.eigvalsh(hermitize(R)).flip(-1)


def infer_k(evals: torch.Tensor, tol: float = RANK_TOL) -> torch.Tensor:
    """Numerical rank per sample: eigenvalues above tol·λ_max."""
    top = evals[:, :1].clamp_min(0)
    return (evals > tol * top).sum(-1) * (top[:, 0] > 0)


def effective_rank(evals: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the normalised non-negative spectrum, per sample (NaN if all ≤ 0)."""
    pos = evals.clamp_min(0)
    p = pos / pos.sum(-1, keepdim=True)
    return torch.exp(-torch.xlogy(p, p).sum(-1))


def _k_vector(K: Any, batch: int, device: torch.device) -> torch.Tensor:
    k = torch.as_tensor(K, device=device).long().reshape(-1)
    if k.numel() == 1:
        k = k.expand(batch)
    if k.numel() != batch:
        raise ValueError(f"K has {k.numel()} entries for a batch of {batch}")
    return k


def gap_at_k(evals: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(λ⁺_K − λ⁺_{K+1}) / λ⁺_1 per sample (1-based K; NaN where K = 0)."""
    pos = evals.clamp_min(0)
    n = pos.shape[-1]
    padded = torch.cat([pos, torch.zeros_like(pos[:, :1])], -1)
    kk = k.clamp(1, n)
    lam_k = padded.gather(-1, (kk - 1)[:, None])[:, 0]
    lam_next = padded.gather(-1, kk[:, None])[:, 0]
    gap = (lam_k - lam_next) / pos[:, 0].clamp_min(torch.finfo(pos.dtype).tiny)
    return torch.where(k > 0, gap, torch.full_like(gap, float("nan")))


def top_k_energy(evals: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Σ_{i≤K} λ⁺ᵢ / Σ λ⁺ᵢ per sample (NaN where K = 0)."""
    pos = evals.clamp_min(0)
    idx = torch.arange(pos.shape[-1], device=pos.device)
    top = (pos * (idx[None, :] < k[:, None])).sum(-1)
    energy = top / pos.sum(-1)
    return torch.where(k > 0, energy, torch.full_like(energy, float("nan")))


def spectrum_record(
    pred: torch.Tensor | None, true: torch.Tensor | None, K: Any = None
) -> dict[str, float]:
    """The `spectrum` record from descending eigenvalues (B, N) of R_pred and/or R_true."""
    out: dict[str, torch.Tensor] = {}
    ref = pred if pred is not None else true
    if ref is None:
        return {}
    k = None
    if K is not None:
        k = _k_vector(K, ref.shape[0], ref.device)
    elif true is not None:
        k = infer_k(true)
    for suffix, evals in (("pred", pred), ("true", true)):
        if evals is None:
            continue
        out[f"eff_rank_{suffix}"] = effective_rank(evals).nanmean()
        if k is not None:
            out[f"gap_{suffix}"] = gap_at_k(evals, k).nanmean()
            out[f"top_k_energy_{suffix}"] = top_k_energy(evals, k).nanmean()
    if pred is not None and true is not None:
        out["scale_ratio"] = pred.sum() / true.sum()
    keys = list(out)
    values = torch.stack([out[key] for key in keys]).tolist() if keys else []
    return dict(zip(keys, values, strict=True))


class SpectraProbe(Probe):
    """Mean descending eigenvalues and spectrum statistics of R_pred vs R_true at eval."""

    name = "spectra"

    def on_eval(self, ctx: StepContext) -> None:
        payload = ctx.payload
        metrics = payload.get("metrics") or {}
        matrices = {
            "R_pred": payload.get("R_pred"),
            "R_true": payload.get("R_true"),
            "R_samp": payload.get("R_samp", metrics.get("R_samp")),
        }
        evals = {
            name: descending_eigvals(R)
            for name, R in matrices.items()
            if isinstance(R, torch.Tensor)
        }
        if not evals:
            return
        writer = ctx.wb.writer
        for name, values in evals.items():
            writer.spectrum(ctx.step, name, values.mean(0).tolist())
        if "R_pred" in evals or "R_true" in evals:
            record = spectrum_record(evals.get("R_pred"), evals.get("R_true"), payload.get("K"))
            writer.scalars(ctx.step, "spectrum", record)
