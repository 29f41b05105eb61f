"""Shared spectral machinery for the loss terms: ONE eigendecomposition per step.

Rules (DESIGN §8, FAILURES 10/11/14):

* every matrix is hermitized before it is decomposed (`hermitize`);
* eigenvalues are returned in explicit *descending* order;
* nothing depends on eigenvector phase: only projectors U Uᴴ leave this module;
* the top-k projector has a hand-written backward that uses only signal×noise pairs,
  dP = Σ_{i≤k<j} (u_j u_jᴴ dA u_i u_iᴴ + h.c.)/(λ_i − λ_j), so exactly degenerate noise
  eigenvalues (R = F Fᴴ + σ²I has N − K_MAX of them) give a finite gradient; torch's own
  `eigh` backward divides by λ_i − λ_j for *all* pairs and returns inf/NaN there. A zero
  gap at k is guarded by Lorentzian broadening 1/D → D/(D² + ε²) with ε = gap_eps·mean|λ|
  (exact for D ≫ ε, bounded by 1/(2ε), and 0 for a truly degenerate pair, where the
  projector is not defined);
* eigenvalue gradients are the `eigvalsh` ones, ∂λ_i/∂A = u_i u_iᴴ, from the same
  decomposition (averaged over an exactly degenerate block in the low-rank path).

Two forward paths, one backward formula:

* ``eigh``: `torch.linalg.eigh` of the full (B, N, N) matrix (about 20 ms for 64 matrices of
  64×64 on two CPU cores);
* ``lowrank``: when a factor hint F (B, N, r) is given and A is *certified* to be
  Q T Qᴴ + s (I − Q Qᴴ) with Q = orth(F) (residual ≤ 256·eps·‖A‖, checked in O(N² r)), the
  eigensystem is the r×r Rayleigh–Ritz problem plus one scalar block; that is exact for the
  model's R_pred = c (F Fᴴ + σ² I) and costs well under 1 ms. Any other matrix (a fault
  injection, R_samp, a test matrix) silently falls back to the full path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "Spectral",
    "hermitize",
    "factor_projector",
    "steering_projector",
    "spectral_decompose",
]


def hermitize(R: torch.Tensor) -> torch.Tensor:
    """(R + Rᴴ)/2: the Hermitian part, taken before any decomposition."""
    return 0.5 * (R + R.mH)


def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device)


def _frob(X: torch.Tensor) -> torch.Tensor:
    """Frobenius norm over the last two dims (torch's complex matrix_norm is ~50× slower)."""
    return torch.view_as_real(X).square().sum((-3, -2, -1)).sqrt()


def _broadened_inverse(d: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """D/(D² + ε²): 1/D for a clean gap, finite (≤ 1/(2ε)) and 0 at D = 0."""
    return d / (d * d + eps * eps)


def _signal_mask(k: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """s_i = 1 for the i < k largest eigenvalues (descending order), else 0; (B, n)."""
    idx = torch.arange(n, device=k.device)
    return (idx[None, :] < k[:, None]).to(dtype)


def _lowrank_eig(A: torch.Tensor, Q: torch.Tensor, tol: float):
    """Rayleigh–Ritz on span(Q); returns (mu desc (B,r), U_r (B,N,r), s (B,)) or None."""
    n, r = A.shape[-1], Q.shape[-1]
    if r >= n:
        return None
    AQ = A @ Q
    T = hermitize(Q.mH @ AQ)
    mu, V = torch.linalg.eigh(T)
    mu, V = mu.flip(-1), V.flip(-1)
    U = Q @ V
    tr = torch.diagonal(A, dim1=-2, dim2=-1).real.sum(-1)
    s = (tr - mu.sum(-1)) / (n - r)
    # certificate: A == U diag(mu) Uᴴ + s (I − Q Qᴴ), to rounding
    resid = A - (U * mu[:, None, :].to(A.dtype)) @ U.mH - s[:, None, None] * (_eye(n, A) - Q @ Q.mH)
    scale = _frob(A).clamp_min(torch.finfo(mu.dtype).tiny)
    ok = _frob(resid) <= tol * scale
    # the Ritz values must sit on or above the scalar block, or the order would interleave
    ok &= mu[:, -1] >= s - tol * scale
    if not bool(ok.all()):
        return None
    return mu, U, s


class _SpectralFn(torch.autograd.Function):
    """(A, k, U, evals, s, Q, gap_eps) -> (evals desc (B,N), P_k (B,N,N)); U etc. precomputed."""

    @staticmethod
    def forward(ctx, A, k, U, evals, s, Q, gap_eps):
        real = evals.dtype
        sig = _signal_mask(k, U.shape[-1], real)
        P = (U * sig[:, None, :].to(U.dtype)) @ U.mH
        eps = gap_eps * evals.abs().mean(-1).clamp_min(torch.finfo(real).tiny)
        ctx.lowrank = Q is not None
        ctx.save_for_backward(U, evals, sig, eps,
                              Q if Q is not None else U[:, :, :0],
                              s if s is not None else evals[:, :0])
        return evals.clone(), P

    @staticmethod
    def backward(ctx, g_evals, g_P):
        U, evals, sig, eps, Q, s = ctx.saved_tensors
        n, r = U.shape[-2], U.shape[-1]
        cdt = U.dtype
        grad = torch.zeros(U.shape[0], n, n, dtype=cdt, device=U.device)
        lam = evals[:, :r]
        if g_evals is not None:
            g_explicit = g_evals[:, :r]
            grad = grad + (U * g_explicit[:, None, :].to(cdt)) @ U.mH
            if r < n:  # low-rank path: one degenerate block with projector I − Q Qᴴ
                g_block = g_evals[:, r:].mean(-1)
                grad = grad + g_block[:, None, None].to(cdt) * (_eye(n, U) - Q @ Q.mH)
        if g_P is not None:
            G = hermitize(g_P)
            D = lam[:, :, None] - lam[:, None, :]
            W = (sig[:, :, None] - sig[:, None, :]) * _broadened_inverse(D, eps[:, None, None])
            Gu = G @ U
            grad = grad + U @ (W.to(cdt) * (U.mH @ Gu)) @ U.mH
            if r < n:
                # signal × scalar-block pairs: Σ_i w_i (P_c G u_i u_iᴴ + u_i u_iᴴ G P_c)
                w = sig * _broadened_inverse(lam - s[:, None], eps[:, None])
                Gs = Gu * w[:, None, :].to(cdt)  # G u_i w_i
                PcGs = Gs - Q @ (Q.mH @ Gs)
                term = PcGs @ U.mH
                grad = grad + term + term.mH
        return grad, None, None, None, None, None, None


@dataclass
class Spectral:
    """One shared decomposition of a Hermitian batch.

    evals: (B, N) real, descending, differentiable (eigvalsh gradient);
    proj:  (B, N, N) projector onto the top-k eigenvectors, differentiable (custom backward);
    k:     (B,) int64 signal dimension per sample; path: "lowrank" or "eigh".
    """

    evals: torch.Tensor
    proj: torch.Tensor
    k: torch.Tensor
    path: str

    @property
    def noise_proj(self) -> torch.Tensor:
        """I − P_k: the MUSIC noise-subspace projector."""
        return _eye(self.proj.shape[-1], self.proj) - self.proj

    @classmethod
    def of(cls, R: torch.Tensor, k: torch.Tensor, hint: torch.Tensor | None = None,
           gap_eps: float = 1e-3) -> Spectral:
        return spectral_decompose(R, k, hint=hint, gap_eps=gap_eps)


def spectral_decompose(R: torch.Tensor, k: torch.Tensor, hint: torch.Tensor | None = None,
                       gap_eps: float = 1e-3) -> Spectral:
    """Hermitize R and decompose it once; `hint` (B, N, r) spans R's non-scalar part, if known."""
    A = hermitize(R)
    k = torch.as_tensor(k, device=A.device).long().reshape(-1)
    low = None
    with torch.no_grad():
        Ad = A.detach()
        if hint is not None and hint.shape[-1] < A.shape[-1]:
            Q = torch.linalg.qr(hint.detach().to(A.dtype)).Q
            low = _lowrank_eig(Ad, Q, tol=256 * torch.finfo(Ad.real.dtype).eps)
        if low is not None:
            mu, U, s = low
            n, r = A.shape[-1], U.shape[-1]
            evals = torch.cat([mu, s[:, None].expand(-1, n - r)], -1)
            path = "lowrank"
        else:
            evals, U = torch.linalg.eigh(Ad)
            evals, U = evals.flip(-1), U.flip(-1)
            Q = s = None
            path = "eigh"
    evals, P = _SpectralFn.apply(A, k, U, evals, s, Q, gap_eps)
    return Spectral(evals=evals, proj=P, k=k, path=path)


def factor_projector(F: torch.Tensor, delta_rel: float = 1e-3) -> torch.Tensor:
    """F (FᴴF + δI)⁻¹ Fᴴ with δ = δ_rel·tr(FᴴF)/r: a phase-free soft projector onto span(F)."""
    r = F.shape[-1]
    gram = F.mH @ F
    tr = torch.diagonal(gram, dim1=-2, dim2=-1).real.sum(-1)
    delta = delta_rel * tr / r + torch.finfo(tr.dtype).tiny ** 0.5
    reg = gram + delta[:, None, None] * _eye(r, gram)
    return F @ torch.linalg.solve(reg, F.mH)


def steering_projector(A: torch.Tensor, mask: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """A (AᴴA)⁻¹ Aᴴ over the active columns (mask (B,K) bool) of A (B,N,K); 0 for k = 0."""
    m = mask.to(A.real.dtype)
    Am = A * m[:, None, :].to(A.dtype)
    gram = Am.mH @ Am
    k = A.shape[-1]
    # inactive slots get a unit diagonal so the solve stays regular and contributes nothing
    reg = gram + torch.diag_embed((1 - m) + ridge).to(A.dtype)
    return Am @ torch.linalg.solve(reg, Am.mH) if k else torch.zeros_like(A @ A.mH)
