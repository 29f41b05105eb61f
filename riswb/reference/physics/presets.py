"""Named simulation presets: array, deployment, field of view and SNR.

`small` (CI-fast): 8×8 RIS at 1 GHz (λ = 0.30 m, spacing 0.15 m). Its aperture diagonal is
D = √2·8·λ/2 = 1.70 m, so the radiating near field spans the Fresnel limit
0.62·√(D³/λ) = 2.50 m to the Fraunhofer distance 2D²/λ = 19.2 m. Range is only resolvable
where the wavefront curvature across the aperture is large — the quadratic phase
k(x²+y²)/(2r) at the corner element is 1.9 rad at 3 m and 1.0 rad at 6 m, and the range
resolution degrades as r² — so r ∈ [3, 6] m: inside the radiating near field, above the
Fresnel limit and below a third of the Fraunhofer distance, where the CRB on r at 20 dB is
≈0.3 m (a tenth of the span). A higher carrier would not help: D scales with λ, and every
distance with it, so only r/λ matters (28 GHz would shrink the same scene to 0.1–0.2 m).

`paper`: 12×12 RIS at 1 GHz, D = 2.55 m, Fresnel limit 4.6 m, Fraunhofer distance
43 m; r ∈ [5, 10] m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from riswb.errors import RiswbError

SPEED_OF_LIGHT = 299_792_458.0


@dataclass(frozen=True)
class Preset:
    """One simulation setting. Angles in radians, ranges in metres.

    snr_db is the default received SNR per BS antenna (see `scenes.simulate_scenes`);
    min_separation is the minimum angle between two sources' directions u.
    """

    name: str
    n_h: int
    n_v: int
    m: int
    l: int  # noqa: E741 (the paper's name for the snapshot count)
    k_max: int
    freq_hz: float
    phi_range: tuple[float, float]
    theta_range: tuple[float, float]
    r_range: tuple[float, float]
    snr_db: float
    min_separation: float
    power_db_range: tuple[float, float]
    rician_k_db: float
    bs_direction: tuple[float, float]
    codebook: str
    code_bits: int | None
    deploy_seed: int

    @property
    def n(self) -> int:
        return self.n_h * self.n_v

    @property
    def wavelength(self) -> float:
        return SPEED_OF_LIGHT / self.freq_hz


def _deg(lo: float, hi: float) -> tuple[float, float]:
    return (math.radians(lo), math.radians(hi))


PRESETS: dict[str, Preset] = {
    "small": Preset(
        name="small", n_h=8, n_v=8, m=8, l=16, k_max=3, freq_hz=1e9,
        phi_range=_deg(-60, 60), theta_range=_deg(-30, 30), r_range=(3.0, 6.0),
        snr_db=10.0, min_separation=math.radians(15), power_db_range=(-3.0, 0.0),
        rician_k_db=3.0, bs_direction=_deg(-40, 10), codebook="random", code_bits=2,
        deploy_seed=2024,
    ),
    "paper": Preset(
        name="paper", n_h=12, n_v=12, m=16, l=16, k_max=5, freq_hz=1e9,
        phi_range=_deg(-60, 60), theta_range=_deg(-30, 30), r_range=(5.0, 10.0),
        snr_db=10.0, min_separation=math.radians(10), power_db_range=(-3.0, 0.0),
        rician_k_db=3.0, bs_direction=_deg(-40, 10), codebook="random", code_bits=2,
        deploy_seed=2024,
    ),
}


def get_preset(name: str | Preset) -> Preset:
    """The preset called `name` (a Preset passes through); RiswbError if unknown."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise RiswbError(
            f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}"
        ) from None
