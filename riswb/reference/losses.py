"""The twelve named loss terms of the reference pipeline (docs/design.md §8, docs/internals.md §4).

Every term is a pure, batched function (no per-sample Python loop) returning a scalar: the
mean over the batch of a per-scene value. `loss_terms` computes the shared quantities once —
the hermitized R_pred, ONE spectral decomposition of it (`riswb.reference.spectral.Spectral`), the
ground-truth signal basis from exact steering vectors — and returns all twelve terms.

Notation per scene: k true sources (1 ≤ k ≤ K_MAX), A = [a_1 … a_k] exact steering vectors
(‖a‖ = 1), Q_t an orthonormal basis of span(A), P_t = Q_t Q_tᴴ = A (AᴴA)⁻¹ Aᴴ; λ_1 ≥ … ≥ λ_N
the eigenvalues of R_pred (explicitly descending), P_k its top-k eigenvector projector and
P_n = I − P_k; F the network factor and P_F = F (FᴴF + δI)⁻¹ Fᴴ (δ = 1e-3·tr(FᴴF)/K_MAX).
Every covariance term is 0 at R_pred = R_true (and F spanning the true subspace), none
depends on eigenvector phase, and none reorders with the truth's source slots.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as tfn

from riswb.instrument.loss_weights import weighted_sum
from riswb.reference.physics.geometry import ris_positions
from riswb.reference.physics.presets import Preset, get_preset
from riswb.reference.physics.steering import steering_exact
from riswb.reference.spectral import Spectral, spectral_decompose

__all__ = [
    "TERM_NAMES",
    "DEFAULT_WEIGHTS",
    "LossGeometry",
    "loss_terms",
    "weighted_total",
    "blend",
    "truth_basis",
    "nmse",
    "nmse_pred",
    "ortho",
    "cross",
    "gap",
    "margin",
    "K",
    "aux",
    "peak",
    "align",
    "subspace_align",
    "peak_contrast",
    "range_twins",
]

TERM_NAMES: tuple[str, ...] = (
    "nmse", "nmse_pred", "ortho", "cross", "gap", "margin",
    "K", "aux", "peak", "align", "subspace_align", "peak_contrast",
)

#: Weights of the reference pipeline (all > 0; a config may override any of them). Chosen so
#: that no term's gradient dwarfs the others once training is under way (at step ~100 of the
#: 512-scene overfit the weighted per-term gradient norms span 0.01–0.5, nmse largest) and
#: the overfit is fastest: nmse < 0.1 after ~145 AdamW steps (lr 1e-3, batch 64), and K
#: cross-entropy 0.03 by then. At initialization nmse still dominates (≈ 4 vs ≤ 0.25) and
#: anti-aligns with margin/gap (cos ≈ −0.95): a random subspace makes nmse favour a flat
#: spectrum; this resolves within ~100 steps.
DEFAULT_WEIGHTS: dict[str, float] = {
    "nmse": 1.0,
    "nmse_pred": 0.5,
    "ortho": 1.0,
    "cross": 0.2,
    "gap": 0.2,
    "margin": 0.2,
    "K": 0.5,
    "aux": 1.0,
    "peak": 0.5,
    "align": 0.5,
    "subspace_align": 0.5,
    "peak_contrast": 0.5,
}

CONTRASTS = ("probes", "range")  # the references `peak_contrast` may use (loss_terms)
GAP_TAU = 0.01  # gap hinge threshold on λ_{k+1}/λ_k (the model's own floor is ~1e-3)
FACTOR_DELTA = 1e-3  # δ_rel of the factor projector P_F
GAP_FLOOR = 1e-3  # λ_k below this share of the mean eigenvalue counts as zero
_TINY = 1e-12


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, eq=False)
class LossGeometry:
    """What the steering-based terms need: RIS positions, λ, field of view, probe directions.

    probe_* are `n_probe` fixed directions drawn uniformly (seeded) over the field of view:
    the off-source reference of `peak_contrast`.
    """

    positions: torch.Tensor  # (N, 3) float32, metres
    wavelength: float
    lo: torch.Tensor  # (3,) lower bounds of (phi, theta, r)
    span: torch.Tensor  # (3,) hi − lo
    probe: torch.Tensor  # (n_probe, N) complex64 steering vectors

    @classmethod
    def from_preset(cls, preset: Preset | str, n_probe: int = 16, seed: int = 0) -> LossGeometry:
        return _geometry_cached(get_preset(preset), n_probe, seed)

    def to(self, device) -> LossGeometry:
        return LossGeometry(self.positions.to(device), self.wavelength, self.lo.to(device),
                            self.span.to(device), self.probe.to(device))


@functools.lru_cache(maxsize=16)
def _geometry_cached(preset: Preset, n_probe: int, seed: int) -> LossGeometry:
    pos = ris_positions(preset, dtype=torch.float32)
    lo = torch.tensor([preset.phi_range[0], preset.theta_range[0], preset.r_range[0]])
    hi = torch.tensor([preset.phi_range[1], preset.theta_range[1], preset.r_range[1]])
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n_probe, 3, generator=g)
    phi, theta, r = (lo + (hi - lo) * u).unbind(-1)
    probe = steering_exact(pos, phi, theta, r, preset.wavelength)
    return LossGeometry(pos, preset.wavelength, lo, hi - lo, probe)


def _as_geometry(geometry_or_preset, device) -> LossGeometry:
    if isinstance(geometry_or_preset, LossGeometry):
        geo = geometry_or_preset
    else:
        geo = LossGeometry.from_preset(geometry_or_preset)
    if geo.positions.device != torch.device(device):
        geo = geo.to(device)
    return geo


# --------------------------------------------------------------------------- helpers


def _frob2(X: torch.Tensor) -> torch.Tensor:
    """‖X‖²_F over the last two dims (complex or real)."""
    if X.is_complex():
        X = torch.view_as_real(X).flatten(-2)
    return X.square().sum((-2, -1))


def _k_of(k: torch.Tensor) -> torch.Tensor:
    return k.clamp_min(1).to(torch.float32)


def blend(R_pred: torch.Tensor, R_samp: torch.Tensor, beta: float) -> torch.Tensor:
    """R_blend = (1 − β)·R_pred + β·R_samp.detach()."""
    if beta == 0:
        return R_pred
    return (1 - beta) * R_pred + beta * R_samp.detach()


@torch.no_grad()
def truth_basis(phi, theta, r, mask, geometry: LossGeometry, ridge: float = 1e-6):
    """(A (B,N,K) masked exact steering, Q_t (B,N,K) with Q_t Q_tᴴ = A(AᴴA)⁻¹Aᴴ, 0 columns
    in empty slots), via Cholesky AᴴA + diag(1 − mask) = L Lᴴ, Q_t = A L⁻ᴴ."""
    rr = torch.where(mask, r, torch.ones_like(r))
    a = steering_exact(geometry.positions, phi, theta, rr, geometry.wavelength)  # (B,K,N)
    A = (a * mask[..., None]).mT  # (B,N,K)
    m = mask.to(torch.float32)
    gram = A.mH @ A + torch.diag_embed((1 - m) + ridge).to(A.dtype)
    L = torch.linalg.cholesky(gram)
    Q = torch.linalg.solve_triangular(L.mH, A, upper=True, left=False)  # A L⁻ᴴ
    return A, Q


# --------------------------------------------------------------------------- the terms


def nmse(R: torch.Tensor, R_true: torch.Tensor) -> torch.Tensor:
    """mean_b ‖R − R_true‖²_F / ‖R_true‖²_F (R = R_blend in `loss_terms`)."""
    return (_frob2(R - R_true) / _frob2(R_true).clamp_min(_TINY)).mean()


def nmse_pred(R_pred: torch.Tensor, R_true: torch.Tensor) -> torch.Tensor:
    """mean_b ‖R_pred − R_true‖²_F / ‖R_true‖²_F (no R_samp blend)."""
    return nmse(R_pred, R_true)


def ortho(spec: Spectral, Q_t: torch.Tensor) -> torch.Tensor:
    """mean_b ‖R − P_t R P_t‖²_F/‖R‖²_F = 1 − ‖Q_tᴴ R Q_t‖²/Σλ², R = herm(R_pred) (shared)."""
    inner = _frob2(Q_t.mH @ spec.matrix @ Q_t)
    total = spec.evals.square().sum(-1).clamp_min(_TINY)  # Σλ² = ‖R‖²_F
    return (1 - inner / total).clamp_min(0).mean()


def _factor_traces(F: torch.Tensor, Q_t: torch.Tensor, delta_rel: float = FACTOR_DELTA):
    """(tr P_F, tr(P_F P_t)) in r×r algebra: M = FᴴF + δI, tr(M⁻¹FᴴF), tr(M⁻¹ (Q_tᴴF)ᴴ(Q_tᴴF))."""
    r = F.shape[-1]
    gram = F.mH @ F
    tr = torch.diagonal(gram, dim1=-2, dim2=-1).real.sum(-1)
    delta = delta_rel * tr / r + _TINY
    M = gram + delta[:, None, None] * torch.eye(r, dtype=gram.dtype, device=gram.device)
    C = Q_t.mH @ F
    sol = torch.linalg.solve(M, torch.cat([gram, C.mH @ C], -1))  # one solve, two RHS blocks
    sol_all, sol_true = sol[..., :r], sol[..., r:]
    t_all = torch.diagonal(sol_all, dim1=-2, dim2=-1).real.sum(-1)
    t_true = torch.diagonal(sol_true, dim1=-2, dim2=-1).real.sum(-1)
    return t_all, t_true


def cross(F: torch.Tensor, Q_t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """mean_b tr(P_F (I − P_t))/k: predicted-factor subspace leaking into the true noise space."""
    t_all, t_true = _factor_traces(F, Q_t)
    return ((t_all - t_true).clamp_min(0) / _k_of(k)).mean()


def align(F: torch.Tensor, Q_t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """mean_b 1 − tr(P_F P_t)/k: how much of the true subspace the factor spans."""
    _, t_true = _factor_traces(F, Q_t)
    return (1 - t_true / _k_of(k)).mean()


def subspace_align(spec: Spectral, Q_t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """mean_b 1 − tr(P_k P_t)/k, P_k = top-k eigenvector projector of R_pred (shared eigh)."""
    t = (Q_t.conj() * spec.project(Q_t)).real.sum((-2, -1))  # tr(Q_tᴴ P_k Q_t)
    return (1 - t / _k_of(k)).mean()


def _gather_evals(evals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    idx = idx.clamp(0, evals.shape[-1] - 1)
    return evals.gather(-1, idx[:, None])[:, 0]


def gap(spec: Spectral, k: torch.Tensor, tau: float = GAP_TAU) -> torch.Tensor:
    """mean_b relu(λ_{k+1}/λ_k − τ), λ descending: 0 once the gap at k is as clean as R_true's."""
    lam_k = _gather_evals(spec.evals, k - 1)
    lam_next = _gather_evals(spec.evals, k)
    # The floor is relative to the mean eigenvalue: λ_k that is only rounding noise (a
    # rank-deficient R_pred) must not turn 1/λ_k into a 1e9 gradient.
    floor = GAP_FLOOR * spec.evals.abs().mean(-1)
    ratio = lam_next / torch.maximum(lam_k.abs(), floor).clamp_min(_TINY)
    return tfn.relu(ratio - tau).mean()


def margin(spec: Spectral, k: torch.Tensor) -> torch.Tensor:
    """mean_b Σ_{i>k} λ_i / Σ_i λ_i (λ descending): the noise-floor share of the energy."""
    n = spec.evals.shape[-1]
    noise = (torch.arange(n, device=k.device)[None, :] >= k[:, None]).to(spec.evals.dtype)
    total = spec.evals.sum(-1)
    return ((spec.evals * noise).sum(-1) / total.abs().clamp_min(_TINY)).mean()


def K(k_logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """mean_b −log softmax(k_logits)[k − 1]: cross-entropy of the source count."""
    return tfn.cross_entropy(k_logits, (k - 1).clamp_min(0))


@functools.lru_cache(maxsize=8)
def _perms(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)


def aux(aux_pred, phi, theta, r, mask, geometry: LossGeometry) -> torch.Tensor:
    """mean_b min_π Σ_j ‖(ẑ_π(j) − z_j)/span‖²/(3k), π onto the first k predicted slots."""
    # invariant to the order within the first k slots, the ones the k head switches on (the
    # factor's gate, riswb/reference/model.py): the first k slots are the sources' estimates
    lo, span = geometry.lo.to(aux_pred), geometry.span.to(aux_pred)
    zp = (aux_pred - lo) / span  # (B, K, 3)
    zt = (torch.stack([phi, theta, r], -1) - lo) / span  # (B, K, 3)
    cost = (zp[:, :, None, :] - zt[:, None, :, :]).square().mean(-1)  # (B, K_pred, K_true)
    perms = _perms(cost.shape[-1]).to(cost.device)  # (P, K)
    cols = torch.arange(cost.shape[-1], device=cost.device)
    per = cost[:, perms, cols]  # (B, P, K): cost of matching true slot j to predicted π(j)
    m = mask.to(cost.dtype)
    k = mask.sum(-1)
    # a permutation is allowed when it sends every true slot j < k to a predicted slot < k
    allowed = ((perms[None] < k[:, None, None]) | ~mask[:, None, :]).all(-1)  # (B, P)
    best = (per * m[:, None, :]).sum(-1).masked_fill(~allowed, torch.inf).amin(-1)
    return (best / _k_of(k)).mean()


def _null_depth(spec: Spectral, v: torch.Tensor) -> torch.Tensor:
    """vᴴ P_n v = ‖v‖² − vᴴ P_k v for columns of v (B, N, J) or (N, J); returns (B, J)."""
    pv = spec.project(v)
    v = v.to(pv.dtype)
    if v.dim() == 2:
        v = v.expand(pv.shape[0], -1, -1)
    quad = (v.conj() * pv).real.sum(-2)
    return torch.view_as_real(v).square().sum((-3, -1)) - quad


def peak(spec: Spectral, A: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean_b (1/k) Σ_{j<k} a_jᴴ P_n a_j: MUSIC null depth at the true sources (0 = perfect)."""
    d = _null_depth(spec, A)  # (B, K)
    m = mask.to(d.dtype)
    return ((d * m).sum(-1) / _k_of(mask.sum(-1))).mean()


def peak_contrast(spec: Spectral, A: torch.Tensor, mask: torch.Tensor, probe: torch.Tensor,
                  twins: torch.Tensor | None = None) -> torch.Tensor:
    """mean_b [(1/k) Σ_j a_jᴴ P_n a_j] / [mean_p b_pᴴ P_n b_p]: null depth vs probe directions."""
    d = _null_depth(spec, A)
    m = mask.to(d.dtype)
    if twins is not None:
        # contrast "range": each source against its range twin (`range_twins`), bounded in
        # [0, 1]: 0 for a null at the source, ½ when range is not resolved, 1 at the twin
        off = _null_depth(spec, twins)
        ratio = d / (d + off).clamp_min(_TINY)
        return ((ratio * m).sum(-1) / _k_of(mask.sum(-1))).mean()
    on = (d * m).sum(-1) / _k_of(mask.sum(-1))
    off = _null_depth(spec, probe.mT).mean(-1)
    return (on / off.clamp_min(1e-6)).mean()


@torch.no_grad()
def range_twins(phi, theta, r, mask, geometry: LossGeometry) -> torch.Tensor:
    """Steering vectors (B, N, K) of each source moved half the range span along its own
    direction, wrapped into the field of view (0 columns in empty slots). Range moves a
    steering vector little (3 → 6 m keeps 94% of |aᴴa'|² on the small preset): the subspace
    terms barely see it, a contrast against the same direction at another range does."""
    lo, span = geometry.lo[2], geometry.span[2]
    twin = lo + torch.remainder(r - lo + span / 2, span)
    a = steering_exact(geometry.positions, phi, theta, twin, geometry.wavelength)
    return (a * mask[..., None]).mT


# --------------------------------------------------------------------------- assembly


def loss_terms(out, batch, geometry_or_preset, beta: float = 0.0,
               contrast: str = "probes") -> dict[str, torch.Tensor]:
    """All twelve terms for a ModelOutput `out` and a SceneBatch `batch`.

    One hermitization and ONE decomposition of R_pred (low-rank path when R_pred is the
    model's F Fᴴ + σ² I, full eigh otherwise); truth quantities carry no gradient.
    contrast: what `peak_contrast` compares each source's null with, "probes" (the fixed
    probe directions) or "range" (the source's range twin, `range_twins`).
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    geo = _as_geometry(geometry_or_preset, out.R_pred.device)
    k = batch.k.to(out.R_pred.device).long()
    A, Q_t = truth_basis(batch.phi, batch.theta, batch.r, batch.mask, geo)
    A, Q_t = A.to(out.R_pred.dtype), Q_t.to(out.R_pred.dtype)
    spec = spectral_decompose(out.R_pred, k, hint=out.factor)  # hermitizes, decomposes once
    twins = (range_twins(batch.phi, batch.theta, batch.r, batch.mask, geo).to(A.dtype)
             if contrast == "range" else None)
    # one projector node for subspace_align, peak and peak_contrast
    spec.prepare(Q_t, A, geo.probe.mT, *([] if twins is None else [twins]))
    R_true = batch.R_true
    pred = nmse_pred(out.R_pred, R_true)
    return {
        "nmse": pred if beta == 0 else nmse(blend(out.R_pred, batch.R_samp, beta), R_true),
        "nmse_pred": pred,
        "ortho": ortho(spec, Q_t),
        "cross": cross(out.factor, Q_t, k),
        "gap": gap(spec, k),
        "margin": margin(spec, k),
        "K": K(out.k_logits, k),
        "aux": aux(out.aux, batch.phi, batch.theta, batch.r, batch.mask, geo),
        "peak": peak(spec, A, batch.mask),
        "align": align(out.factor, Q_t, k),
        "subspace_align": subspace_align(spec, Q_t, k),
        "peak_contrast": peak_contrast(spec, A, batch.mask, geo.probe, twins),
    }


def weighted_total(terms: dict[str, torch.Tensor],
                   weights: dict[str, float] | None = None) -> torch.Tensor:
    """Σ_name w_name·term_name over the terms present (weights default to DEFAULT_WEIGHTS;
    a term missing from `weights` gets its default weight, an unknown name weight 1)."""
    return weighted_sum(terms, {**DEFAULT_WEIGHTS, **(weights or {})})
