"""The reference covariance-learning network: RIS measurements y -> R_pred, k, (φ, θ, r).

Architecture of `CovarianceNet` (small preset: N = 64, M = 8, L = 16, K_MAX = 3):

1. Physics-informed front end (no parameters). The deployment (H, codes) is static per
   preset (`riswb.reference.physics.scenes.deployment`), so the per-snapshot regularized
   back-projection operators B_l = G_lᴴ (G_l G_lᴴ + δ_l I)⁻¹, G_l = H diag(c_l), are
   buffers. x̂_l = B_l y_l; the feature is the back-projected sample covariance
   R̂ = (1/L) Σ_l x̂_l x̂_lᴴ trace-normalized to N (scale-free: SNR, power and units of y do
   not matter, so the trainer needs no input normalization), packed as N² real numbers
   (diagonal, Re and Im of the strict upper triangle).
2. Trunk: Linear(N², W) -> GELU -> Linear(W, W) -> GELU  (W = `width`, 512 by default).
3. Heads:
   * factor: Linear(W, 2·N·K_MAX) -> complex F (B, N, K_MAX), with column j gated by the
     model's own P(k > j) from k_logits (column 0 always on), so R_pred's rank follows the
     predicted source count and the k head also learns from the covariance terms;
   * R_pred = N (F Fᴴ + σ² I) / tr(F Fᴴ + σ² I), σ² = `load`·tr(F Fᴴ)/N (relative
     diagonal loading, 1e-3): Hermitian PSD by construction, trace N, condition number
     bounded, and exactly "rank K_MAX + scalar" — which `riswb.reference.spectral` exploits to
     decompose it in O(N² K) instead of a full eigh;
   * k_logits: Linear(W, K_MAX), class j means k = j + 1;
   * aux: Linear(W, 3·K_MAX) -> sigmoid scaled to the preset's φ, θ, r ranges (radians,
     metres), so every value is in range with no clamp (a clamp kills gradients).

`head="steering"` replaces the free factor by a parametric one (docs/case-study.md §7):
column j = gate_j·√p_j·a(φ_j, θ_j, r_j), the exact near-field steering vector at the aux
head's slot j, p_j from power_head (Linear(W, K_MAX), sigmoid-scaled into the preset's
power range in dB) and gate_j = 0.05 + 0.95·P(k > j), floored so that a slot the k head
switches off still owns an eigenvector above the loading (MUSIC with a larger K given then
finds it). R_pred keeps the "rank K_MAX + scalar" form, MUSIC on it returns the slots, and
the subspace terms train the positions. `refine_steps` > 0 adds the physics stage of
`riswb.reference.refinement` in eval mode: the slots and the k posterior refined on the
likelihood of y (inference only, no parameters; `unrefined()` turns it off, which the
trainer's validation does); `aux` stays the network's own positions.

`feature="snapshot"` replaces step 1 by the per-snapshot outer products y_l y_lᴴ (L·M² =
1024 real inputs, normalized by the mean snapshot power): it needs no knowledge of the
deployment, has 990,604 parameters at width 512, and overfits about as fast.

Parameter count, small preset, width 512, feature="backprojection": 2,563,468 (the
N² = 4096 inputs of the first layer hold 2.1 M of them). With head="steering": 2,368,015
(the factor head's 196,992 replaced by the power head's 1,539).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from riswb.probes.params import top_module
from riswb.reference.physics.geometry import ris_positions
from riswb.reference.physics.presets import Preset, get_preset
from riswb.reference.physics.scenes import deployment
from riswb.reference.physics.steering import steering_exact
from riswb.reference.refinement import Refiner

__all__ = ["CovarianceNet", "ModelOutput", "backbone_and_heads", "pack_hermitian"]

HEADS = ("factor", "steering")
GATE_FLOOR = 0.05  # steering head: a slot the k head switches off stays above the loading


@dataclass
class ModelOutput:
    """What `CovarianceNet.forward` returns (docs/internals.md §4)."""

    R_pred: torch.Tensor  # (B, N, N) complex64, Hermitian PSD, trace N
    factor: torch.Tensor  # (B, N, K_MAX) complex64, R_pred = c·(F Fᴴ + σ² I)
    k_logits: torch.Tensor  # (B, K_MAX), class j <=> k = j + 1
    aux: torch.Tensor  # (B, K_MAX, 3) = (phi rad, theta rad, r m) per slot


def pack_hermitian(R: torch.Tensor) -> torch.Tensor:
    """(B, N, N) Hermitian -> (B, N²) real: diagonal, then Re and Im of the upper triangle."""
    n = R.shape[-1]
    iu = torch.triu_indices(n, n, offset=1, device=R.device)
    upper = R[:, iu[0], iu[1]]
    diag = torch.diagonal(R, dim1=-2, dim2=-1).real
    return torch.cat([diag, upper.real, upper.imag], -1)


def _backprojection_operators(h: torch.Tensor, codes: torch.Tensor, reg: float) -> torch.Tensor:
    """B_l = G_lᴴ (G_l G_lᴴ + δ_l I)⁻¹, δ_l = reg·tr(G_l G_lᴴ)/M: (L, N, M) complex64."""
    g = (h[None, :, :] * codes[:, None, :]).to(torch.complex128)
    gram = g @ g.mH
    m = g.shape[1]
    delta = reg * torch.diagonal(gram, dim1=-2, dim2=-1).real.sum(-1) / m
    eye = torch.eye(m, dtype=g.dtype)
    return (g.mH @ torch.linalg.inv(gram + delta[:, None, None] * eye)).to(torch.complex64)


class CovarianceNet(nn.Module):
    """Covariance-learning network for a preset (see the module docstring).

    forward(y (B, L, M) complex64) -> ModelOutput. Parameters: 2,563,468 for the small
    preset at width 512 (`sum(p.numel() for p in model.parameters())`).
    """

    def __init__(self, preset: Preset | str = "small", width: int = 512, load: float = 1e-3,
                 reg: float = 0.1, feature: str = "backprojection", head: str = "factor",
                 refine_steps: int = 0):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {head!r}")
        if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 0:
            raise ValueError(f"refine_steps must be an integer >= 0, not {refine_steps!r}")
        if refine_steps and head != "steering":
            raise ValueError("refine_steps needs head='steering' (it refines slot positions)")
        preset = get_preset(preset)
        self.preset = preset
        self.n, self.k_max = preset.n, preset.k_max
        self.load = float(load)
        h, codes = deployment(preset)
        self.register_buffer("bp", _backprojection_operators(h, codes, reg), persistent=False)
        lo = torch.tensor([preset.phi_range[0], preset.theta_range[0], preset.r_range[0]])
        hi = torch.tensor([preset.phi_range[1], preset.theta_range[1], preset.r_range[1]])
        self.register_buffer("aux_lo", lo, persistent=False)
        self.register_buffer("aux_span", hi - lo, persistent=False)
        if feature not in ("backprojection", "snapshot"):
            raise ValueError(f"feature must be 'backprojection' or 'snapshot', not {feature!r}")
        self.feature = feature
        n_in = self.n * self.n if feature == "backprojection" else preset.l * preset.m**2
        self.trunk = nn.Sequential(
            nn.Linear(n_in, width), nn.GELU(), nn.Linear(width, width), nn.GELU()
        )
        self.head = head
        if head == "factor":
            self.factor_head = nn.Linear(width, 2 * self.n * self.k_max)
        else:
            self.power_head = nn.Linear(width, self.k_max)
            db_lo, db_hi = preset.power_db_range
            self.power_db = (db_lo, db_hi - db_lo)
            self.register_buffer("positions", ris_positions(preset), persistent=False)
        self.refine_steps = refine_steps
        self.refining = True  # `unrefined()` switches the physics stage off (validation)
        self.refiner = Refiner(preset, h, codes) if refine_steps else None
        self.k_head = nn.Linear(width, self.k_max)
        self.aux_head = nn.Linear(width, 3 * self.k_max)

    def features(self, y: torch.Tensor) -> torch.Tensor:
        """Packed, scale-free input features: (B, N²) back-projected sample covariance, or
        (B, L·M²) per-snapshot y_l y_lᴴ for feature="snapshot"; float32."""
        if self.feature == "snapshot":
            yy = y[:, :, :, None] * y[:, :, None, :].conj()  # (B, L, M, M)
            tr = y.abs().square().sum((1, 2)).clamp_min(1e-30) / y.shape[1]
            yy = yy * (self.preset.m / tr)[:, None, None, None]
            b, n_snap, m = y.shape
            return pack_hermitian(yy.reshape(b * n_snap, m, m)).reshape(b, n_snap * m * m)
        x = torch.einsum("lnm,blm->bln", self.bp, y)  # x̂_l = B_l y_l
        r = torch.einsum("bln,blk->bnk", x, x.conj()) / y.shape[1]
        tr = torch.diagonal(r, dim1=-2, dim2=-1).real.sum(-1).clamp_min(1e-30)
        return pack_hermitian(r * (self.n / tr)[:, None, None])

    def forward(self, y: torch.Tensor) -> ModelOutput:
        b = y.shape[0]
        z = self.trunk(self.features(y))
        k_logits = self.k_head(z)
        aux = self.aux_lo + self.aux_span * torch.sigmoid(self.aux_head(z).view(b, self.k_max, 3))
        if self.head == "factor":
            f = self.factor_head(z).view(b, self.n, self.k_max, 2)
            factor = torch.complex(f[..., 0], f[..., 1]) * _gate(k_logits)[:, None, :]
        else:
            pos = aux
            if self.refiner is not None and self.refining and not self.training:
                pos, k_logits = self.refiner(y, aux, k_logits, self.refine_steps)
            factor = self._steering_factor(z, pos, k_logits)
        ffh = factor @ factor.mH
        e = torch.diagonal(ffh, dim1=-2, dim2=-1).real.sum(-1)  # tr(F Fᴴ)
        sigma2 = self.load * e / self.n
        eye = torch.eye(self.n, dtype=ffh.dtype, device=ffh.device)
        scale = self.n / (e * (1 + self.load) + 1e-12)
        R = (ffh + sigma2[:, None, None] * eye) * scale[:, None, None]
        R = 0.5 * (R + R.mH)  # exact Hermitian symmetry (the complex matmul rounds)
        return ModelOutput(R_pred=R, factor=factor, k_logits=k_logits, aux=aux)

    def _steering_factor(self, z: torch.Tensor, pos: torch.Tensor,
                         k_logits: torch.Tensor) -> torch.Tensor:
        """F (B, N, K_MAX): column j = gate_j·√p_j·a(φ_j, θ_j, r_j), exact steering."""
        lo, span = self.power_db
        power_db = lo + span * torch.sigmoid(self.power_head(z))
        amp = 10 ** (power_db / 20)
        gate = GATE_FLOOR + (1 - GATE_FLOOR) * _gate(k_logits)
        a = steering_exact(self.positions, pos[..., 0], pos[..., 1], pos[..., 2],
                           self.preset.wavelength)  # (B, K_MAX, N)
        return (a * (amp * gate)[..., None]).mT

    @contextmanager
    def unrefined(self):
        """No physics stage inside the block (the trainer's validation scores the network)."""
        before, self.refining = self.refining, False
        try:
            yield self
        finally:
            self.refining = before


def _gate(k_logits: torch.Tensor) -> torch.Tensor:
    """gate_j = P(k > j) = Σ_{i ≥ j} p_i (class i <=> k = i + 1): column 0 always on."""
    p = torch.softmax(k_logits, -1)
    return torch.flip(torch.cumsum(torch.flip(p, [-1]), -1), [-1])


def backbone_and_heads(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The trainable parameters as the two optimizer groups: `heads` (top-level modules whose
    name ends in "head") and `backbone` (the rest)."""
    backbone: list[nn.Parameter] = []
    heads: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (heads if top_module(name).endswith("head") else backbone).append(param)
    return backbone, heads
