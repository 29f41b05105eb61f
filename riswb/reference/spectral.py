"""Shared spectral machinery for the loss terms: ONE eigendecomposition per step.

Rules (docs/design.md §8, docs/failures.md #10/11/14):

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

* ``eigh``: `torch.linalg.eigh` of the full (B, N, N) matrix, O(N³) per matrix;
* ``lowrank``: when a factor hint F (B, N, r) is given and A is *certified* to be
  Q T Qᴴ + s (I − Q Qᴴ) with Q = orth(F) (residual ≤ 256·eps·‖A‖, checked in O(N² r)), the
  eigensystem is the r×r Rayleigh–Ritz problem plus one scalar block; that is exact for the
  model's R_pred = c (F Fᴴ + σ² I) and costs O(N² r). Any other matrix (a fault
  injection, R_samp, a test matrix) silently falls back to the full path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from riswb.linalg import hermitize

__all__ = [
    "Spectral",
    "hermitize",
    "factor_projector",
    "spectral_decompose",
]


def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device)


def _frob(X: torch.Tensor) -> torch.Tensor:
    """Frobenius norm over the last two dims (torch's complex matrix_norm is much slower)."""
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
    # certificate: A == U diag(mu) Uᴴ + s (I − Q Qᴴ) = U diag(mu − s) Uᴴ + s I, to rounding
    resid = A - (U * (mu - s[:, None])[:, None, :].to(A.dtype)) @ U.mH
    resid.diagonal(dim1=-2, dim2=-1).sub_(s[:, None].to(A.dtype))
    scale = _frob(A).clamp_min(torch.finfo(mu.dtype).tiny)
    ok = _frob(resid) <= tol * scale
    # the Ritz values must sit on or above the scalar block, or the order would interleave
    ok &= mu[:, -1] >= s - tol * scale
    if not bool(ok.all()):
        return None
    return mu, U, s


@dataclass
class _Eig:
    """A decomposition, no grad: U (B,N,r) explicit eigenvectors with eigenvalues lam (B,r),
    descending; for r < N also Q (B,N,r) orthonormal and s (B,) the scalar block on I − QQᴴ."""

    U: torch.Tensor
    lam: torch.Tensor
    Q: torch.Tensor | None
    s: torch.Tensor | None

    def assemble(self, C, pcgs=None, block=None):
        """U C Uᴴ + (P_c G_s Uᴴ + h.c.) + block·(I − QQᴴ) as ONE (N×·)(·×N) product."""
        U = self.U
        left, right = [U @ C if pcgs is None else U @ C + pcgs], [U]
        if pcgs is not None:
            left.append(U)
            right.append(pcgs)
        if block is not None:
            left.append(-block[:, None, None].to(U.dtype) * self.Q)
            right.append(self.Q)
        grad = torch.cat(left, -1) @ torch.cat(right, -1).mH
        if block is not None:
            grad.diagonal(dim1=-2, dim2=-1).add_(block[:, None].to(U.dtype))
        return grad


class _EvalsFn(torch.autograd.Function):
    """A -> λ (B,N) descending, with the eigvalsh gradient ∂λ_i/∂A = u_i u_iᴴ."""

    @staticmethod
    def forward(ctx, A, eig, evals):
        ctx.eig = eig
        return evals.clone()

    @staticmethod
    def backward(ctx, g):
        eig = ctx.eig
        b, n, r = eig.U.shape
        C = torch.diag_embed(g[:, :r].to(eig.U.dtype))
        block = g[:, r:].mean(-1) if r < n else None  # the degenerate block, averaged
        return eig.assemble(C, block=block), None, None


class _ProjectFn(torch.autograd.Function):
    """(A, V) -> P_k V, P_k the top-k eigenvector projector of A; V is a constant (B|1, N, J).

    Backward: grad_A = Σ_{i∈S, j∉S} w_ij (u_j u_jᴴ G u_i u_iᴴ + h.c.), G = herm(Ḡ Vᴴ),
    w_ij = (λ_i − λ_j)/((λ_i − λ_j)² + ε²); with the scalar block j ∈ span(I − QQᴴ).
    """

    @staticmethod
    def forward(ctx, A, V, eig, sig, eps):
        Uk = eig.U * sig[:, None, :].to(eig.U.dtype)
        ctx.eig, ctx.sig, ctx.eps = eig, sig, eps
        ctx.save_for_backward(V)
        return Uk @ (Uk.mH @ V)

    @staticmethod
    def backward(ctx, g):
        (V,) = ctx.saved_tensors
        eig, sig, eps = ctx.eig, ctx.sig, ctx.eps
        U, lam = eig.U, eig.lam
        cdt = U.dtype
        if V.dim() == 2:
            V = V.expand(g.shape[0], -1, -1)
        Gu = 0.5 * (g @ (V.mH @ U) + V @ (g.mH @ U))  # herm(Ḡ Vᴴ) U, never N×N
        D = lam[:, :, None] - lam[:, None, :]
        W = (sig[:, :, None] - sig[:, None, :]) * _broadened_inverse(D, eps[:, None, None])
        C = W.to(cdt) * (U.mH @ Gu)
        pcgs = None
        if eig.Q is not None:
            # signal × scalar-block pairs: Σ_i w_i (P_c G u_i u_iᴴ + u_i u_iᴴ G P_c)
            w = sig * _broadened_inverse(lam - eig.s[:, None], eps[:, None])
            Gs = Gu * w[:, None, :].to(cdt)
            pcgs = Gs - eig.Q @ (eig.Q.mH @ Gs)
        return eig.assemble(C, pcgs=pcgs), None, None, None, None


@dataclass
class Spectral:
    """One shared decomposition of a Hermitian batch (see the module docstring).

    matrix: (B, N, N) the hermitized input that was decomposed (differentiable);
    evals:  (B, N) real, descending, differentiable (eigvalsh gradient);
    k:      (B,) int64 signal dimension per sample; path: "lowrank" or "eigh";
    project(V) = P_k V and proj = P_k (dense), differentiable through the custom backward.
    """

    matrix: torch.Tensor
    evals: torch.Tensor
    k: torch.Tensor
    path: str
    _eig: _Eig
    _sig: torch.Tensor
    _eps: torch.Tensor
    _cache: dict = field(default_factory=dict)

    @staticmethod
    def _key(V: torch.Tensor):
        return (V.data_ptr(), tuple(V.shape), tuple(V.stride()), V.dtype)

    def project(self, V: torch.Tensor) -> torch.Tensor:
        """P_k V for constant V (B, N, J) or (N, J): O(N·r·J), no N×N matrix is formed."""
        hit = self._cache.get(self._key(V))
        if hit is not None:
            return hit[1]
        V = V.to(self.matrix.dtype).detach()
        return _ProjectFn.apply(self.matrix, V, self._eig, self._sig, self._eps)

    def prepare(self, *Vs: torch.Tensor) -> None:
        """Project several constant blocks through ONE autograd node (one backward assembly);
        later `project` calls on the same tensors (same storage, shape, strides) reuse it."""
        b = self.matrix.shape[0]
        blocks = [V.expand(b, -1, -1) if V.dim() == 2 else V for V in Vs]
        out = self.project(torch.cat([v.to(self.matrix.dtype) for v in blocks], -1))
        start = 0
        for V, block in zip(Vs, blocks, strict=True):
            stop = start + block.shape[-1]
            self._cache[self._key(V)] = (V, out[..., start:stop])  # V kept alive with its key
            start = stop

    @property
    def proj(self) -> torch.Tensor:
        """P_k (B, N, N), the dense top-k eigenvector projector."""
        n = self.matrix.shape[-1]
        return self.project(_eye(n, self.matrix))

    @property
    def noise_proj(self) -> torch.Tensor:
        """I − P_k: the MUSIC noise-subspace projector (dense)."""
        return _eye(self.matrix.shape[-1], self.matrix) - self.proj

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
        n = A.shape[-1]
        if hint is not None and hint.shape[-1] < n:
            Q = torch.linalg.qr(hint.detach().to(A.dtype)).Q
            low = _lowrank_eig(Ad, Q, tol=256 * torch.finfo(Ad.real.dtype).eps)
        if low is not None:
            mu, U, s = low
            evals = torch.cat([mu, s[:, None].expand(-1, n - U.shape[-1])], -1)
            eig, path = _Eig(U, mu, Q, s), "lowrank"
        else:
            evals, U = torch.linalg.eigh(Ad)
            evals, U = evals.flip(-1), U.flip(-1)
            eig, path = _Eig(U, evals, None, None), "eigh"
        sig = _signal_mask(k, U.shape[-1], evals.dtype)
        eps = gap_eps * evals.abs().mean(-1).clamp_min(torch.finfo(evals.dtype).tiny)
    return Spectral(matrix=A, evals=_EvalsFn.apply(A, eig, evals), k=k, path=path,
                    _eig=eig, _sig=sig, _eps=eps)


def factor_projector(F: torch.Tensor, delta_rel: float = 1e-3) -> torch.Tensor:
    """F (FᴴF + δI)⁻¹ Fᴴ with δ = δ_rel·tr(FᴴF)/r: a phase-free soft projector onto span(F)."""
    r = F.shape[-1]
    gram = F.mH @ F
    tr = torch.diagonal(gram, dim1=-2, dim2=-1).real.sum(-1)
    delta = delta_rel * tr / r + torch.finfo(tr.dtype).tiny ** 0.5
    reg = gram + delta[:, None, None] * _eye(r, gram)
    return F @ torch.linalg.solve(reg, F.mH)
