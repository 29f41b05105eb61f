"""Seeded scene simulation: sources, coded snapshots, R_true and R_samp.

Per scene: K ~ U{1..K_MAX}; directions (φ, θ) uniform in the preset's field of view with
every pair of directions u at least `preset.min_separation` apart; r ~ U(r_range); powers
p_k = 10^(U(power_db_range)/10). Per snapshot l (fresh symbols and noise):
    y_l = G_l A s_l + n_l,  G_l = H diag(c_l),  s_l ~ CN(0, P),  n_l ~ CN(0, σ²I_M).
SNR is the mean received signal power per BS antenna over σ²:
    σ² = (1/(L·M)) Σ_l tr(G_l A P Aᴴ G_lᴴ) / 10^(SNR/10).
The deployment (H, codes) is fixed per preset (drawn from `preset.deploy_seed`): a static
BS and RIS, identical for every scene seed, so a model may take them as constants.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from riswb.reference.physics.channel import complex_normal, rician_channel
from riswb.reference.physics.codes import make_codes
from riswb.reference.physics.covariance import (
    backprojection_covariance,
    coded_operators,
    true_covariance,
)
from riswb.reference.physics.geometry import direction, ris_positions
from riswb.reference.physics.presets import Preset, get_preset
from riswb.reference.physics.steering import steering_exact

_CANDIDATES = 64  # direction draws per source slot for the separation constraint


@dataclass
class SceneBatch:
    """B scenes with K = k_max source slots; sources fill the first k slots (0 elsewhere)."""

    phi: torch.Tensor  # (B, K) float32
    theta: torch.Tensor  # (B, K) float32
    r: torch.Tensor  # (B, K) float32
    mask: torch.Tensor  # (B, K) bool
    k: torch.Tensor  # (B,) int64
    snr_db: torch.Tensor  # (B,) float32
    power: torch.Tensor  # (B, K) float32
    noise_var: torch.Tensor  # (B,) float32, σ²
    y: torch.Tensor  # (B, L, M) complex64
    codes: torch.Tensor  # (L, N) complex64, shared
    H: torch.Tensor  # (M, N) complex64, shared
    R_true: torch.Tensor  # (B, N, N) complex64
    R_samp: torch.Tensor  # (B, N, N) complex64

    _SHARED = ("codes", "H")

    def __len__(self) -> int:
        return self.phi.shape[0]

    def __getitem__(self, idx) -> SceneBatch:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return replace(self, **{f.name: getattr(self, f.name)[idx] for f in fields(self)
                                if f.name not in self._SHARED})

    def to(self, device) -> SceneBatch:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def deployment(preset: Preset) -> tuple[torch.Tensor, torch.Tensor]:
    """The preset's static (H (M, N), codes (L, N)), both complex64."""
    gen = torch.Generator().manual_seed(preset.deploy_seed)
    h = rician_channel(preset, gen)
    return h, make_codes(preset, gen)


def _uniform(lo_hi, shape, gen) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=torch.float64)


def sample_sources(preset: Preset, n: int, gen: torch.Generator):
    """(phi, theta, r, power, mask, k) for n scenes; the separation constraint is met by
    taking, per slot, the first of 64 candidate directions far enough from earlier slots
    (the farthest one if none is — vanishingly rare at the presets' fields of view)."""
    k_max = preset.k_max
    k = torch.randint(1, k_max + 1, (n,), generator=gen)
    phi = torch.zeros(n, k_max, dtype=torch.float64)
    theta = torch.zeros_like(phi)
    for j in range(k_max):  # a loop over source slots, batched over scenes
        cphi = _uniform(preset.phi_range, (n, _CANDIDATES), gen)
        ctheta = _uniform(preset.theta_range, (n, _CANDIDATES), gen)
        if j == 0:
            pick = torch.zeros(n, dtype=torch.long)
        else:
            cos = direction(cphi, ctheta) @ direction(phi[:, :j], theta[:, :j]).mT  # (n, T, j)
            sep = torch.acos(cos.clamp(-1, 1)).amin(-1)
            ok = sep >= preset.min_separation
            first = torch.argmax(ok.to(torch.int8), -1)
            pick = torch.where(ok.any(-1), first, sep.argmax(-1))
        phi[:, j] = cphi.gather(1, pick[:, None])[:, 0]
        theta[:, j] = ctheta.gather(1, pick[:, None])[:, 0]
    r = _uniform(preset.r_range, (n, k_max), gen)
    power = 10 ** (_uniform(preset.power_db_range, (n, k_max), gen) / 10)
    mask = torch.arange(k_max)[None, :] < k[:, None]
    zero = torch.zeros((), dtype=torch.float64)
    phi, theta, r, power = (torch.where(mask, t, zero) for t in (phi, theta, r, power))
    return phi, theta, r, power, mask, k


def _snr(snr_db, preset: Preset, n: int, gen) -> torch.Tensor:
    if snr_db is None:
        snr_db = preset.snr_db
    if isinstance(snr_db, (tuple, list)):
        return _uniform(snr_db, (n,), gen)
    return torch.full((n,), float(snr_db), dtype=torch.float64)


def simulate_scenes(
    preset: Preset | str,
    n_scenes: int,
    seed: int = 0,
    snr_db: float | tuple[float, float] | None = None,
    device: torch.device | str = "cpu",
) -> SceneBatch:
    """Simulate `n_scenes` scenes (seeded by `seed`); SNR fixed (float), drawn per scene
    from a (lo, hi) range in dB, or the preset's default (None)."""
    preset = get_preset(preset)
    if n_scenes <= 0:
        raise ValueError(f"n_scenes must be positive, got {n_scenes}")
    gen = torch.Generator().manual_seed(seed)
    h, codes = deployment(preset)
    phi, theta, r, power, mask, k = sample_sources(preset, n_scenes, gen)
    snr = _snr(snr_db, preset, n_scenes, gen)

    pos = ris_positions(preset, dtype=torch.float64)
    a = steering_exact(pos, phi, theta, torch.where(mask, r, 1.0), preset.wavelength)  # (B,K,N)
    a = a * mask[..., None]
    g = coded_operators(h, codes).to(torch.complex128)  # (L, M, N)
    ga = torch.einsum("lmn,bkn->blmk", g, a)  # G_l A
    signal = (ga.abs().square() * power[:, None, None, :]).sum((1, 2, 3)) / (preset.l * preset.m)
    noise_var = signal / 10 ** (snr / 10)

    s = complex_normal((n_scenes, preset.l, preset.k_max), gen, torch.complex128)
    s = s * power.sqrt()[:, None, :]
    noise = complex_normal((n_scenes, preset.l, preset.m), gen, torch.complex128)
    y = torch.einsum("blmk,blk->blm", ga, s) + noise * noise_var.sqrt()[:, None, None]
    y = y.to(torch.complex64)

    batch = SceneBatch(
        phi=phi.float(), theta=theta.float(), r=r.float(), mask=mask, k=k,
        snr_db=snr.float(), power=power.float(), noise_var=noise_var.float(), y=y,
        codes=codes, H=h,
        R_true=true_covariance(a, power).to(torch.complex64),
        R_samp=backprojection_covariance(y, h, codes),
    )
    return batch.to(device)

