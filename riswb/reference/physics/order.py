"""Model-order (source count K) estimation from a covariance's eigenvalues.

eigen-gap: K̂ = argmax_{1≤k≤K_max} log λ_k − log(λ_{k+1} + ε·λ_1)   (λ descending)
MDL (Wax–Kailath, L snapshots):
  MDL(k) = −L(N−k)·log(g_k / a_k) + ½·k(2N−k)·log L,
  g_k, a_k = geometric and arithmetic means of the N−k smallest eigenvalues; K̂ = argmin.
MDL assumes white noise and L ≫ N; the eigen-gap rule does not, and is the default.
"""

from __future__ import annotations

import math

import torch

from riswb.linalg import hermitize


def descending_eigvals(r: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the Hermitized R, descending, clamped at 0: (..., N) float."""
    return torch.linalg.eigvalsh(hermitize(r)).flip(-1).clamp_min(0.0)


def estimate_k_gap(eigvals: torch.Tensor, k_max: int, eps: float = 1e-6) -> torch.Tensor:
    """Eigen-gap K̂ (int64, in 1..k_max) from descending eigenvalues (..., N)."""
    lam = eigvals.to(torch.float64)
    floor = eps * lam[..., :1]
    ratio = torch.log(lam[..., :k_max] + floor) - torch.log(lam[..., 1 : k_max + 1] + floor)
    return ratio.argmax(-1) + 1


def estimate_k_mdl(eigvals: torch.Tensor, k_max: int, n_snapshots: int,
                   eps: float = 1e-9) -> torch.Tensor:
    """MDL K̂ (int64, in 1..k_max) from descending eigenvalues (..., N)."""
    lam = eigvals.to(torch.float64).clamp_min(eps * eigvals[..., :1].to(torch.float64))
    n = lam.shape[-1]
    log_lam = torch.log(lam)
    scores = []
    for k in range(1, k_max + 1):  # a loop over candidate orders, batched over scenes
        tail = lam[..., k:]
        log_geo = log_lam[..., k:].mean(-1)
        log_arith = torch.log(tail.mean(-1))
        penalty = 0.5 * k * (2 * n - k) * math.log(n_snapshots)
        scores.append(-n_snapshots * (n - k) * (log_geo - log_arith) + penalty)
    return torch.stack(scores, -1).argmin(-1) + 1
