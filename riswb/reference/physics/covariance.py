"""Source covariances: the ground truth R_true and the R_samp baseline estimator.

R_true = N · A P Aᴴ / tr(A P Aᴴ): Hermitian PSD, rank K, trace N.

R_samp (regularized back-projection): per snapshot, the regularized least-squares
(minimum-norm) estimate of the RIS-side signal x_l = A s_l from y_l = G_l x_l + n_l,
G_l = H diag(c_l):
    x̂_l = G_lᴴ (G_l G_lᴴ + δ_l I)⁻¹ y_l,   δ_l = reg · tr(G_l G_lᴴ)/M,
then R_samp ∝ (1/L) Σ_l x̂_l x̂_lᴴ, hermitized and trace-normalized to N. Each x̂_l lies in
the M-dimensional row space of G_l; for isotropic random codes E[P_l R P_l] = αR + β·tr(R)·I,
so the signal subspace survives in expectation while the floor is lifted (a baseline, not
ground truth). It uses only (y, H, codes).
"""

from __future__ import annotations

import torch

from riswb.linalg import hermitize


def trace_normalize(r: torch.Tensor, target: float | None = None) -> torch.Tensor:
    """R · target / tr R (target defaults to N), batched over leading dims."""
    n = r.shape[-1]
    tr = torch.diagonal(r, dim1=-2, dim2=-1).real.sum(-1)
    return r * ((target if target is not None else n) / tr.clamp_min(1e-30))[..., None, None]


def true_covariance(a: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """R_true = N·A P Aᴴ / tr(A P Aᴴ) from steering a (B, K, N) and power (B, K) (0 = empty)."""
    r = torch.einsum("bkn,bk,bkm->bnm", a, power.to(a.dtype), a.conj())
    return trace_normalize(hermitize(r))


def coded_operators(h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """G_l = H diag(c_l): (L, M, N)."""
    return h[None, :, :] * codes[:, None, :]


def backprojection_covariance(
    y: torch.Tensor, h: torch.Tensor, codes: torch.Tensor, reg: float = 0.1
) -> torch.Tensor:
    """R_samp (B, N, N) from y (B, L, M), H (M, N), codes (L, N); see the module docstring."""
    g = coded_operators(h, codes).to(torch.complex128)  # (L, M, N)
    gram = g @ g.mH
    m = g.shape[1]
    delta = reg * torch.diagonal(gram, dim1=-2, dim2=-1).real.sum(-1) / m
    eye = torch.eye(m, dtype=g.dtype)
    w = g.mH @ torch.linalg.inv(gram + delta[:, None, None] * eye)  # (L, N, M)
    x = torch.einsum("lnm,blm->bln", w, y.to(g.dtype))
    r = torch.einsum("bln,blk->bnk", x, x.conj()) / y.shape[1]
    return trace_normalize(hermitize(r)).to(y.dtype)


def nmse(r_est: torch.Tensor, r_true: torch.Tensor) -> torch.Tensor:
    """‖R_est − R_true‖²_F / ‖R_true‖²_F per matrix."""
    return (r_est - r_true).abs().square().sum((-2, -1)) / r_true.abs().square().sum((-2, -1))
