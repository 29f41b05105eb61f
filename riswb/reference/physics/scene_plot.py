"""One scene's MUSIC spectrum as a figure: the φ×θ angle map (max over r, dB) and range
cuts through each true source's direction, with true and estimated positions marked."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from riswb.reference.physics.geometry import ris_positions  # noqa: E402
from riswb.reference.physics.music import (  # noqa: E402
    Localization,
    MusicGrid,
    music_spectrum,
    null_spectrum,
    signal_subspace,
)
from riswb.reference.physics.presets import Preset  # noqa: E402
from riswb.reference.physics.scenes import SceneBatch  # noqa: E402
from riswb.reference.physics.steering import steering_exact  # noqa: E402


def deg(t: torch.Tensor):
    return (t.double() * 180 / math.pi).numpy()


def _db(x: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(x / x.max())


def render_scene(preset: Preset, scene: SceneBatch, r: torch.Tensor, k: torch.Tensor,
                 loc: Localization, path: str | Path, title: str) -> Path:
    """Write the figure for scene 0 of `scene` (spectrum of R (1, N, N) with K = k) to path."""
    grid = MusicGrid.for_preset(preset, step_deg=1.0, n_r=24)
    spec = music_spectrum(r, k, preset, grid)[0]  # (Gφ, Gθ, Gr)
    true = scene.mask[0]
    fig, (ax_a, ax_r) = plt.subplots(1, 2, figsize=(12, 4.8), width_ratios=[1.4, 1])

    extent = [float(deg(t)) for t in (grid.phi[0], grid.phi[-1], grid.theta[0], grid.theta[-1])]
    im = ax_a.imshow(_db(spec.amax(-1)).T.numpy(), origin="lower", extent=extent,
                     aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax_a, label="MUSIC pseudo-spectrum, max over r (dB)")
    ax_a.scatter(deg(scene.phi[0][true]), deg(scene.theta[0][true]), s=140, marker="x",
                 color="red", linewidths=2.5, label="true")
    ax_a.scatter(deg(loc.phi[0][loc.mask[0]]), deg(loc.theta[0][loc.mask[0]]), s=160,
                 facecolors="none", edgecolors="white", linewidths=2, label="MUSIC")
    ax_a.set(xlabel="azimuth φ (deg)", ylabel="elevation θ (deg)", title="angle map")
    ax_a.legend(loc="upper right", framealpha=0.8)

    pos = ris_positions(preset, dtype=torch.float64)
    r_axis = torch.linspace(*preset.r_range, 200, dtype=torch.float64)
    us = signal_subspace(r, k, preset.k_max).to(torch.complex128)
    for j in true.nonzero()[:, 0].tolist():
        a = steering_exact(pos, scene.phi[0, j].double(), scene.theta[0, j].double(), r_axis,
                           preset.wavelength)
        cut = _db(1 / null_spectrum(us, a[None])[0])
        label = (f"source {j + 1} (φ={deg(scene.phi[0, j]):.1f}°, "
                 f"θ={deg(scene.theta[0, j]):.1f}°)")
        line, = ax_r.plot(r_axis.numpy(), cut.numpy(), label=label)
        ax_r.axvline(float(scene.r[0, j]), color=line.get_color(), linestyle="--")
    ax_r.set(xlabel="range r (m)", ylabel="pseudo-spectrum (dB, per cut)",
             title="range cuts at the true directions (dashed: true r)")
    ax_r.legend(fontsize=8)
    ax_r.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
